// Random bytes as code in system mode must never crash or hang the process: every run ends
// within its budget with an exit the caller can act on.
#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <vector>

#include "random_code.h"

namespace lamina::cpu::x86::testing {
namespace {

TEST(Robustness, RandomBytesAsCodeEndWithinBudget) {
  std::mt19937_64 random(0x1a31a);
  int exits[5] = {};
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> bytes(1 + random() % 4096);
    for (uint8_t& byte : bytes) byte = static_cast<uint8_t>(random());
    // Bias some inputs toward valid prefixes and opcode escapes.
    for (size_t j = 1; j + 1 < bytes.size(); j += 7)
      if (random() % 3 == 0) bytes[j] = static_cast<uint8_t>(random() % 2 ? 0x0f : 0x48);
    const CpuExit::Kind kind = run_random_code(bytes, 5000);
    ++exits[static_cast<int>(kind)];
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 30.0);
  // Random code triple-faults, halts or runs out of budget; all are orderly exits.
  EXPECT_GT(exits[static_cast<int>(CpuExit::Kind::kTripleFault)] + exits[static_cast<int>(CpuExit::Kind::kHalted)] +
                exits[static_cast<int>(CpuExit::Kind::kBudgetExhausted)],
            295);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
