// libFuzzer target for the VHD parser (built with clang and -DLAMINA_FUZZ=ON):
//   build/tests/storage/vhd_fuzz -max_len=65536 corpus/

#include <cstdint>
#include <cstdlib>
#include <string>

#include "vhd_fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One private folder per process, so locators cannot reach anything but the input itself.
  static const std::string folder = [] {
    char pattern[] = "/tmp/lamina-vhd-fuzz-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    return std::string(made != nullptr ? made : "/tmp");
  }();
  lamina::storage::test::run_vhd_input({data, size}, folder);
  return 0;
}
