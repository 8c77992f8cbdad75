// libFuzzer target for virtio-blk request parsing (built with clang and -DLAMINA_FUZZ=ON):
//   build-fuzz/tests/virtio/virtio_block_fuzz -max_len=65537 corpus/
// Seeds: LAMINA_VIRTIO_BLOCK_CORPUS=corpus build/tests/virtio/virtio_block_test
//   --gtest_filter=*RandomChains* writes 64 generated inputs.
// An input is a flags byte and a guest RAM image holding queue 0 (virtio_block_fuzz_input.h).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "virtio_block_fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One private folder and image per process.
  static lamina::virtio::test::BlockFuzzHarness harness([] {
    char pattern[] = "/tmp/lamina-blk-fuzz-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    return std::string(made != nullptr ? made : "/tmp");
  }());
  auto outcome = harness.run({data, size});
  if (!outcome.violation.empty()) {
    std::fprintf(stderr, "virtio-blk: %s\n", outcome.violation.c_str());
    std::abort();
  }
  return 0;
}
