#pragma once
// The one honest answer of a subcommand that is reserved but not built yet.

#include <string_view>

namespace lamina::cli {

// Exit status of a reserved-but-unbuilt subcommand (distinct from usage errors, which are 106+).
inline constexpr int kNotBuiltExitCode = 3;

// Prints "lamina <command>: not built yet: <what>" to stderr and throws
// CLI::RuntimeError(kNotBuiltExitCode).
[[noreturn]] void report_not_built(std::string_view command, std::string_view what);

}  // namespace lamina::cli
