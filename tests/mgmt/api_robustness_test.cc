// The API fuzz harness on generated inputs in every build: random bytes, and valid create
// bodies with one byte changed.
#include <unistd.h>

#include <random>

#include <gtest/gtest.h>

#include "fuzz/api_request_input.h"

namespace lamina::mgmt {
namespace {

TEST(ApiRobustness, RandomRequestsGetWellFormedAnswers) {
  ApiFuzzHarness harness(std::filesystem::temp_directory_path() /
                         ("lamina-api-robust-" + std::to_string(::getpid())));
  std::mt19937 random(20261206);
  for (int round = 0; round < 300; ++round) {
    std::vector<uint8_t> input(random() % 600);
    for (auto& byte : input) byte = static_cast<uint8_t>(random());
    const std::string problem = harness.run(input);
    ASSERT_TRUE(problem.empty()) << "round " << round << ": " << problem;
  }
}

TEST(ApiRobustness, MutatedCreateBodiesGetWellFormedAnswers) {
  ApiFuzzHarness harness(std::filesystem::temp_directory_path() /
                         ("lamina-api-mutate-" + std::to_string(::getpid())));
  const std::string valid =
      R"({"name":"vm1","autostart":true,"definition":{"cpus":2,"memory":"256M",)"
      R"("nets":["switch:lab,mac=52:54:00:12:34:56"],"rng":"none"}})";
  std::mt19937 random(7);
  for (int round = 0; round < 300; ++round) {
    std::string body = valid;
    body[random() % body.size()] = static_cast<char>(random());
    // POST /v1/vms (method 1, target 0, no name) with the body, then a GET of the list.
    std::vector<uint8_t> input = {1, 0, 0,
                                  static_cast<uint8_t>(std::min<size_t>(body.size(), 255))};
    input.insert(input.end(), body.begin(), body.begin() + input[3]);
    const std::string problem = harness.run(input);
    ASSERT_TRUE(problem.empty()) << body << ": " << problem;
  }
}

}  // namespace
}  // namespace lamina::mgmt
