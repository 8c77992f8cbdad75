#include "cli/not_built.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>

namespace lamina::cli {

void report_not_built(std::string_view command, std::string_view what) {
  fmt::print(stderr, "lamina {}: not built yet: {}\n", command, what);
  throw CLI::RuntimeError(kNotBuiltExitCode);
}

}  // namespace lamina::cli
