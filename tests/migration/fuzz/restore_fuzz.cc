// libFuzzer entry for machine state restore (tests/migration/CMakeLists.txt builds it with
// -DLAMINA_FUZZ=ON and clang 16).
#include <cstddef>
#include <cstdint>

#include "fuzz/restore_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)lamina::migration::restore_fuzz_input(
      std::span(reinterpret_cast<const std::byte*>(data), size));
  return 0;
}
