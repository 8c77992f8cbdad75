#include "random_code.h"

#include <cstring>

#include "test_machine.h"

namespace lamina::cpu::x86::testing {

CpuExit::Kind run_random_code(std::span<const uint8_t> input, uint64_t budget) {
  TestMachine machine(4 << 20);
  const uint8_t selector = input.empty() ? 0 : input[0];
  const std::span<const uint8_t> bytes = input.empty() ? input : input.subspan(1);
  // The code region and, for some inputs, the IDT and GDT get the input bytes.
  const size_t code_size = std::min<size_t>(bytes.size(), 0x8000);
  machine.write(0x100000, bytes.subspan(0, code_size));
  switch (selector % 3) {
    case 0:
      machine.enter_long_mode(selector & 0x80 ? 3 : 0, 4 << 20);
      machine.state().rip = 0x100000;
      machine.state().gpr[kRsp] = 0x180000;
      for (unsigned vector = 0; vector < 32; ++vector)
        machine.set_long_gate(static_cast<uint8_t>(vector), 0x100000 + vector * 0x40, vector & 3, 3);
      machine.write64(TestMachine::kTss + 4, 0x170000);
      break;
    case 1: {
      CpuState& s = machine.state();
      machine.write64(0x1008, segment_descriptor(0, 0xfffff, kCode32));
      machine.write64(0x1010, segment_descriptor(0, 0xfffff, kData32));
      s.cr0 = cr0::kPe | cr0::kEt;
      s.gdtr = {0x1000, 0x17};
      s.idtr = {0x100000, 0x7ff};  // the IDT is made of input bytes
      s.segment[kCs] = SegmentCache{0x08, 0, 0xffffffff, kCode32};
      for (uint8_t seg : {kEs, kSs, kDs, kFs, kGs}) s.segment[seg] = SegmentCache{0x10, 0, 0xffffffff, kData32};
      s.rip = 0x100000;
      s.gpr[kRsp] = 0x180000;
      machine.cpu().state_changed();
      break;
    }
    default: {
      CpuState& s = machine.state();
      s.segment[kCs] = SegmentCache{0x1000, 0x10000, 0xffff, 0x9b};
      s.rip = 0;
      s.idtr = {0, 0x3ff};
      machine.write(0, bytes.subspan(0, std::min<size_t>(bytes.size(), 0x400)));
      machine.cpu().state_changed();
      break;
    }
  }
  machine.state().write_rflags(rflags::kFixed1 | (selector & 0x40 ? rflags::kIf : 0));
  machine.environment().interrupts = {0x20, 0x21, 0x30};
  machine.cpu().post(request::kInterrupt);
  CpuExit::Kind last = CpuExit::Kind::kBudgetExhausted;
  uint64_t spent = 0;
  // Continue after HLT a few times (as a platform would when an interrupt arrives).
  for (int round = 0; round < 4 && spent < budget; ++round) {
    const CpuExit exit = machine.cpu().run(budget - spent);
    spent += exit.instructions + 1;
    last = exit.kind;
    if (exit.kind != CpuExit::Kind::kHalted) break;
    machine.state().halted = false;
    machine.environment().interrupts.push_back(0x22);
    machine.cpu().post(request::kInterrupt);
  }
  return last;
}

}  // namespace lamina::cpu::x86::testing
