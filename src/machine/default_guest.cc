#include "machine/default_guest.h"

#include <fmt/format.h>

#include <cstdlib>

namespace lamina::machine {

Result<DefaultGuest> find_default_guest() {
  std::filesystem::path cache;
  if (const char* configured = std::getenv("LAMINA_CACHE"); configured && *configured) {
    cache = configured;
  } else if (const char* home = std::getenv("HOME"); home && *home) {
    cache = std::filesystem::path(home) / ".cache" / "lamina";
  } else {
    return fail(ErrorCode::kNotFound, "neither LAMINA_CACHE nor HOME is set: cannot find the "
                                      "default guest (pass --kernel)");
  }
  std::filesystem::path folder = cache / "guest";
  DefaultGuest guest{folder / "vmlinuz", folder / "initrd.img", "console=ttyS0 quiet"};
  std::error_code error;
  if (!std::filesystem::is_regular_file(guest.kernel, error) ||
      !std::filesystem::is_regular_file(guest.initrd, error)) {
    return fail(ErrorCode::kNotFound,
                fmt::format("the default guest is not in '{}': run scripts/make-guest (or pass "
                            "--kernel)", folder.string()));
  }
  return guest;
}

}  // namespace lamina::machine
