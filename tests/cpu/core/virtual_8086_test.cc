// Virtual-8086 mode on the core (SDM vol. 3A ch. 20): IRET from ring 0 into it, IOPL-sensitive
// instructions faulting to the ring-0 monitor with the virtual-8086 frame, INT n at IOPL 3
// through a DPL 3 gate and IRET back, INT3 not being IOPL-sensitive.
#include <gtest/gtest.h>

#include <vector>

#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

class Virtual8086Test : public ::testing::Test {
 protected:
  static constexpr uint64_t kGdt = 0x1000, kIdt = 0x1800, kTss = 0x2000, kMonitor = 0x3000,
                            kV86Code = 0x4100, kHandler = 0x6000, kReturner = 0x6100;

  void SetUp() override {
    const uint64_t gdt[] = {0, segment_descriptor(0, 0xfffff, kCode32),
                            segment_descriptor(0, 0xfffff, kData32),
                            segment_descriptor(kTss, 0x67, 0x8b)};
    for (size_t i = 0; i < std::size(gdt); ++i) machine.write64(kGdt + i * 8, gdt[i]);
    machine.write64(kTss + 4, (uint64_t{0x10} << 32) | 0x9000);  // ESP0, SS0
    gate(vector::kGeneralProtection, kHandler, 0);
    machine.write(kHandler, std::vector<uint8_t>{0xf4});
    machine.write(kReturner, std::vector<uint8_t>{0xcf});  // iret
    machine.enter_protected_mode(kGdt, sizeof(gdt) - 1, kIdt, SegmentCache{0x18, kTss, 0x67, 0x8b});
    machine.state().rip = kMonitor;
    machine.write(kMonitor, std::vector<uint8_t>{0xcf});  // iret into virtual-8086 mode
  }
  void gate(uint8_t vector, uint64_t handler, uint8_t dpl) {
    machine.write64(kIdt + vector * 8, handler | (uint64_t{0x08} << 16) |
                                           (static_cast<uint64_t>(0x8e | (dpl << 5)) << 40));
  }
  // The ring-0 IRET frame that enters virtual-8086 mode at 0400:0100 with `eflags`.
  void enter(uint32_t eflags) {
    const uint32_t frame[] = {0x0100, 0x0400, eflags, 0x0ffe, 0x0500, 0x0600, 0x0700, 0x0800, 0x0900};
    for (size_t i = 0; i < std::size(frame); ++i) write32(0x8000 + 4 * i, frame[i]);
    machine.state().gpr[kRsp] = 0x8000;
    machine.cpu().state_changed();
  }
  void write32(uint64_t address, uint32_t value) { machine.write32(address, value); }
  uint32_t stack32(int slot) { return machine.read32(machine.state().gpr[kRsp] + 4 * slot); }
  TestMachine machine;
};

TEST_F(Virtual8086Test, CliBelowIopl3FaultsToTheMonitorWithTheVirtual8086Frame) {
  machine.write(kV86Code, std::vector<uint8_t>{0x90, 0xfa});  // nop; cli
  enter(0x20202);                                               // VM, IF, IOPL 0
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  CpuState& s = machine.state();
  EXPECT_EQ(s.rip, kHandler + 1);
  EXPECT_EQ(s.cpl, 0);
  EXPECT_FALSE(s.virtual_8086());
  EXPECT_EQ(s.gpr[kRsp], 0x9000u - 40);
  // Error code, EIP, CS, EFLAGS (RF set: a fault), ESP, SS, ES, DS, FS, GS (SDM Figure 20-5).
  const uint32_t expected[] = {0, 0x101, 0x400, 0x30202, 0xffe, 0x500, 0x600, 0x700, 0x800, 0x900};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(stack32(i), expected[i]) << "slot " << i;
  EXPECT_EQ(s.segment[kDs].selector, 0);  // the handler starts with null data segments
  EXPECT_EQ(s.segment[kSs].selector, 0x10);
}

TEST_F(Virtual8086Test, AtIopl3InterruptsGoThroughTheIdtAndIretComesBack) {
  // cli; pushf; int 0x21; jmp $ — the DPL 3 gate's handler IRETs back to virtual-8086 mode.
  machine.write(kV86Code, std::vector<uint8_t>{0xfa, 0x9c, 0xcd, 0x21, 0xeb, 0xfe});
  gate(0x21, kReturner, 3);
  enter(0x23202);  // VM, IOPL 3, IF
  machine.cpu().run(50);
  CpuState& s = machine.state();
  EXPECT_TRUE(s.virtual_8086());
  EXPECT_EQ(s.cpl, 3);
  EXPECT_EQ(s.rip, 0x104u);
  EXPECT_FALSE(s.rflags & rflags::kIf);  // CLI worked without a fault
  EXPECT_EQ(s.gpr[kRsp] & 0xffff, 0xffcu);
  EXPECT_EQ(machine.read64(0x5000 + 0xffc) & 0xffff, 0x3002u);  // PUSHF: IOPL 3, IF clear
  EXPECT_EQ(s.segment[kDs].base, 0x7000u);                      // restored by the IRET
  EXPECT_EQ(s.segment[kGs].selector, 0x900);
}

TEST_F(Virtual8086Test, IntNBelowIopl3IsGeneralProtectionButInt3IsNot) {
  machine.write(kV86Code, std::vector<uint8_t>{0xcd, 0x21});
  gate(0x21, kReturner, 3);
  enter(0x20002);
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.state().rip, kHandler + 1);
  EXPECT_EQ(stack32(0), 0u);
  EXPECT_EQ(stack32(1), 0x100u);  // the INT itself

  // INT3 goes to its DPL 3 gate whatever IOPL is (SDM 20.2.7).
  SetUp();
  machine.state().halted = false;
  machine.write(kV86Code, std::vector<uint8_t>{0xcc});
  machine.write(0x6200, std::vector<uint8_t>{0xf4});
  gate(vector::kBreakpoint, 0x6200, 3);
  enter(0x20002);
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.state().rip, 0x6201u);
  EXPECT_EQ(stack32(0), 0x101u);  // EIP after INT3, no error code
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
