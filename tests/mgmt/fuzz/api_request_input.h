#pragma once
// Turns fuzz bytes into API requests against a real ApiRouter and VmService (in a scratch state
// folder) and checks every answer: a status from 200 to 599, a JSON body for JSON answers, an
// error body of the documented shape, and no VM left half-made. Shared by the robustness test
// (mgmt_test) and the libFuzzer target api_fuzz.
//
// Thread-safety: one instance per thread.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "mgmt/api_router.h"

namespace lamina::mgmt {

class ApiFuzzHarness {
 public:
  explicit ApiFuzzHarness(const std::filesystem::path& scratch);
  ~ApiFuzzHarness();
  // Runs the requests the bytes describe; returns an empty string when every answer was
  // well-formed, else what was wrong.
  std::string run(std::span<const uint8_t> input);

 private:
  std::filesystem::path scratch_;
  std::unique_ptr<VmService> service_;
  std::unique_ptr<ApiRouter> router_;
};

}  // namespace lamina::mgmt
