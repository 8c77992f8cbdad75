// libFuzzer target: API requests (method, target, body) from the input against a real router
// and service; any malformed answer or a half-made VM aborts.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "api_request_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static lamina::mgmt::ApiFuzzHarness harness(std::filesystem::temp_directory_path() /
                                              ("lamina-api-fuzz-" + std::to_string(::getpid())));
  const std::string problem = harness.run(std::span(data, size));
  if (!problem.empty()) {
    std::fprintf(stderr, "api_fuzz: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
