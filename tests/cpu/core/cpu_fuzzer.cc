// libFuzzer entry point: arbitrary bytes as system-mode code (see random_code.h).
#include <cstddef>
#include <cstdint>
#include <span>

#include "random_code.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lamina::cpu::x86::testing::run_random_code(std::span<const uint8_t>(data, size), 5000);
  return 0;
}
