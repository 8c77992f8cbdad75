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
  // no_timer_check: Linux's boot-time test that the IO-APIC timer fires within a few
  // calibrated delay loops panics a guest whose vCPU thread the host did not run for a moment
  // (a loaded host, many VMs); KVM guests skip it for the same reason.
  DefaultGuest guest{folder / "vmlinuz", folder / "initrd.img",
                     "console=ttyS0 quiet no_timer_check"};
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
