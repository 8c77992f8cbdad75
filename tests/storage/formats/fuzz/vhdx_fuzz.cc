// libFuzzer target: arbitrary bytes opened as a vhdx image (build with -DLAMINA_FUZZ=ON and clang).
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_one.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lamina::storage::testing::fuzz_one(data, size, lamina::storage::testing::ImageFormat::kVhdx);
  return 0;
}
