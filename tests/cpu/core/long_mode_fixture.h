#pragma once
// A GoogleTest fixture around TestMachine in 64-bit mode: code at kCode entered at a chosen CPL
// with the stack at kStackTop (RSP0 in the TSS for ring changes), handlers at kHandler that
// halt, scratch data at kData. Shared by the long-mode and conformance tests.

#include <cstdint>
#include <vector>

#include <gtest/gtest.h>

#include "test_machine.h"

namespace lamina::cpu::x86::testing {

class LongModeFixture : public ::testing::Test {
 public:
  static constexpr uint64_t kCode = 0x100000, kHandler = 0x110000, kData = 0x120000,
                            kStackTop = 0x180000;

 protected:
  void start(uint8_t cpl, std::vector<uint8_t> code) {
    machine.enter_long_mode(cpl);
    machine.write(kCode, code);
    machine.write64(TestMachine::kTss + 4, 0x170000);  // RSP0
    state().rip = kCode;
    state().gpr[kRsp] = kStackTop;
    state().halted = false;
  }
  CpuState& state() { return machine.state(); }
  CpuExit run(uint64_t budget = 10000) { return machine.cpu().run(budget); }
  // A handler at `address` for `vector` that halts at once.
  void halting_handler(uint8_t vector, uint64_t address, uint8_t ist = 0) {
    const uint8_t halt[] = {0xf4};
    machine.write(address, halt);
    machine.set_long_gate(vector, address, ist);
  }
  TestMachine machine;
};

}  // namespace lamina::cpu::x86::testing
