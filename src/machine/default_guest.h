#pragma once
// Where `lamina run` finds the default guest that scripts/make-guest builds.

#include <filesystem>

#include "base/error.h"

namespace lamina::machine {

struct DefaultGuest {
  std::filesystem::path kernel;
  std::filesystem::path initrd;
  std::string cmdline;
};

// ${LAMINA_CACHE:-$HOME/.cache/lamina}/guest; kNotFound (telling how to make it) when absent.
Result<DefaultGuest> find_default_guest();

}  // namespace lamina::machine
