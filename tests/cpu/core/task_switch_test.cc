// Hardware task switches on the core (SDM vol. 3A ch. 7): CALL to a TSS and IRET back through
// the back-link, INT n through a task gate, JMP to a busy TSS, IRET to a TSS that is not busy,
// and a 16-bit TSS; checked through memory and registers as a guest would see them.
#include <gtest/gtest.h>

#include <vector>

#include "cpu/x86/system/task_state.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

class TaskSwitchTest : public ::testing::Test {
 protected:
  static constexpr uint64_t kGdt = 0x1000, kIdt = 0x1800, kTssA = 0x2000, kTssB = 0x2100,
                            kTss16 = 0x2200, kCodeA = 0x3000, kCodeB = 0x5000, kCode16 = 0x5800,
                            kHandler = 0x6000, kResult = 0x7000;
  static constexpr uint16_t kSelectorA = 0x18, kSelectorB = 0x20, kGateB = 0x28, kSelector16 = 0x30;

  void SetUp() override {
    const uint64_t task_gate = (uint64_t{kSelectorB} << 16) | (uint64_t{0x85} << 40);
    const uint64_t gdt[] = {0,
                            segment_descriptor(0, 0xfffff, kCode32),
                            segment_descriptor(0, 0xfffff, kData32),
                            segment_descriptor(kTssA, 0x67, 0x8b),  // busy: the running task
                            segment_descriptor(kTssB, 0x67, 0x89),
                            task_gate,
                            segment_descriptor(kTss16, 0x2b, 0x81)};
    for (size_t i = 0; i < std::size(gdt); ++i) machine.write64(kGdt + i * 8, gdt[i]);
    // Task B: flat ring 0 at kCodeB with EAX = 0x1234 and its own stack.
    write32(kTssB + 0x20, kCodeB);
    write32(kTssB + 0x24, 0x2);
    write32(kTssB + 0x28, 0x1234);
    write32(kTssB + 0x38, 0x9000);
    for (uint32_t offset : {0x48u, 0x50u, 0x54u, 0x58u, 0x5cu}) write32(kTssB + offset, 0x10);
    write32(kTssB + 0x4c, 0x08);
    machine.enter_protected_mode(kGdt, sizeof(gdt) - 1, kIdt,
                                 SegmentCache{kSelectorA, kTssA, 0x67, 0x8b});
    CpuState& s = machine.state();
    s.rip = kCodeA;
    s.gpr[kRsp] = 0x8000;
    s.gpr[kRbx] = 0xb0b;
  }
  void write32(uint64_t address, uint32_t value) { machine.write32(address, value); }
  uint32_t read32(uint64_t address) { return machine.read32(address); }
  uint8_t descriptor_type(uint16_t selector) { return (machine.read64(kGdt + selector) >> 40) & 0xf; }
  // A #GP/#TS/#NP handler (interrupt gate) that halts.
  void halting_handler(uint8_t vector) {
    machine.write(kHandler, std::vector<uint8_t>{0xf4});
    machine.write64(kIdt + vector * 8, kHandler | (uint64_t{0x08} << 16) | (uint64_t{0x8e} << 40));
  }
  TestMachine machine;
};

TEST_F(TaskSwitchTest, CallToTssNestsAndIretReturns) {
  // A: call far 0x20:0; hlt.  B: mov [kResult], eax; iret.
  machine.write(kCodeA, std::vector<uint8_t>{0x9a, 0, 0, 0, 0, 0x20, 0x00, 0xf4});
  machine.write(kCodeB, std::vector<uint8_t>{0xa3, 0x00, 0x70, 0x00, 0x00, 0xcf});
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  CpuState& s = machine.state();
  EXPECT_EQ(read32(kResult), 0x1234u);  // B ran with its own EAX
  EXPECT_EQ(s.rip, kCodeA + 8);         // A resumed after the CALL
  EXPECT_EQ(s.gpr[kRbx], 0xb0bu);       // with its own registers, saved in its TSS
  EXPECT_EQ(s.gpr[kRsp], 0x8000u);
  EXPECT_EQ(s.tr.selector, kSelectorA);
  EXPECT_TRUE(s.cr0 & cr0::kTs);
  EXPECT_FALSE(s.rflags & rflags::kNt);
  // The CALL linked B back to A; B's state was saved at its IRET with NT clear.
  EXPECT_EQ(read32(kTssB) & 0xffff, kSelectorA);
  EXPECT_EQ(read32(kTssB + 0x20), kCodeB + 6);
  EXPECT_EQ(read32(kTssB + 0x24) & rflags::kNt, 0u);
  EXPECT_EQ(read32(kTssA + 0x20), kCodeA + 7);  // A's EIP at the switch
  EXPECT_EQ(read32(kTssA + 0x34), 0xb0bu);      // A's EBX
  // IRET leaves B available again; A stays busy.
  EXPECT_EQ(descriptor_type(kSelectorB), 0x9);
  EXPECT_EQ(descriptor_type(kSelectorA), 0xb);
}

TEST_F(TaskSwitchTest, InterruptThroughTaskGateAndJumpToBusyTss) {
  // The IDT's vector 0x40 is a task gate to B. A: int 0x40; hlt.  B: jmp far 0x18:0 (A, busy).
  machine.write64(kIdt + 0x40 * 8, (uint64_t{kSelectorB} << 16) | (uint64_t{0x85} << 40));
  machine.write(kCodeA, std::vector<uint8_t>{0xcd, 0x40, 0xf4});
  machine.write(kCodeB, std::vector<uint8_t>{0xea, 0, 0, 0, 0, 0x18, 0x00});
  halting_handler(vector::kGeneralProtection);
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  CpuState& s = machine.state();
  // B runs nested (NT set, back-link A, busy) and its JMP to the busy A is #GP(0x18).
  EXPECT_EQ(s.rip, kHandler + 1);
  EXPECT_EQ(s.tr.selector, kSelectorB);
  EXPECT_EQ(read32(s.gpr[kRsp]), kSelectorA);  // error code
  EXPECT_EQ(read32(s.gpr[kRsp] + 4), kCodeB);  // the JMP
  EXPECT_EQ(read32(kTssB) & 0xffff, kSelectorA);
  EXPECT_EQ(descriptor_type(kSelectorB), 0xb);
  EXPECT_EQ(read32(kTssA + 0x20), kCodeA + 2);  // A saved after its INT
}

TEST_F(TaskSwitchTest, IretToTaskThatIsNotBusyIsInvalidTss) {
  // NT set with a back-link naming B, which is available: #TS(0x20), no switch.
  write32(kTssA, kSelectorB);
  machine.write(kCodeA, std::vector<uint8_t>{0xcf});
  halting_handler(vector::kInvalidTss);
  CpuState& s = machine.state();
  s.rflags |= rflags::kNt;
  machine.cpu().state_changed();
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(s.rip, kHandler + 1);
  EXPECT_EQ(read32(s.gpr[kRsp]), kSelectorB);
  EXPECT_EQ(read32(s.gpr[kRsp] + 4), kCodeA);
  EXPECT_EQ(s.tr.selector, kSelectorA);
}

TEST_F(TaskSwitchTest, JumpToSixteenBitTss) {
  // 16-bit TSS: IP 0x5800, FLAGS 2, AX 0x77, SP 0x9800, ES/SS/DS 0x10, CS 0x08.
  machine.write(kTss16 + 0x0e, std::vector<uint8_t>{0x00, 0x58, 0x02, 0x00, 0x77, 0x00});
  machine.write(kTss16 + 0x1a, std::vector<uint8_t>{0x00, 0x98});
  machine.write(kTss16 + 0x22, std::vector<uint8_t>{0x10, 0, 0x08, 0, 0x10, 0, 0x10, 0});
  machine.write(kCodeA, std::vector<uint8_t>{0xea, 0, 0, 0, 0, 0x30, 0x00});
  machine.write(kCode16, std::vector<uint8_t>{0xf4});
  CpuState& s = machine.state();
  s.gpr[kRax] = 0xdead0000;
  machine.cpu().state_changed();
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(s.rip, kCode16 + 1);
  EXPECT_EQ(s.gpr[kRax], 0xdead0077u);  // a 16-bit TSS loads the low word only
  // A 16-bit TSS has no FS or GS: they are loaded null, as Bochs and QEMU do.
  EXPECT_EQ(s.segment[kFs].selector, 0);
  EXPECT_EQ(s.segment[kGs].selector, 0);
  EXPECT_EQ(s.tr.selector, kSelector16);
  EXPECT_EQ(descriptor_type(kSelector16), 0x3);  // busy 16-bit TSS
  EXPECT_EQ(descriptor_type(kSelectorA), 0x9);   // JMP released A
}

TEST_F(TaskSwitchTest, BadDataSegmentFaultsInTheNewTask) {
  // B's DS lies past the GDT limit: the switch completes (CS and SS load first), then
  // #TS(0x40) is raised in task B (SDM 7.3 step 12, Table 7-1).
  CpuState& s = machine.state();
  write32(kTssB + 0x54, 0x40);
  machine.write(kCodeA, std::vector<uint8_t>{0xea, 0, 0, 0, 0, 0x20, 0x00});
  halting_handler(vector::kInvalidTss);
  // B's stack holds the frame, so the fault is delivered with B's SS:ESP.
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(s.tr.selector, kSelectorB);
  EXPECT_EQ(s.rip, kHandler + 1);
  EXPECT_EQ(s.gpr[kRsp], 0x9000u - 16);
  EXPECT_EQ(read32(s.gpr[kRsp]), 0x40u);
  EXPECT_EQ(read32(s.gpr[kRsp] + 4), kCodeB);  // the new task's EIP
  EXPECT_EQ(s.segment[kDs].selector, 0x40);   // visible, unusable
}

TEST_F(TaskSwitchTest, TrapFlagInTheNewTssRaisesDebugBeforeItsFirstInstruction) {
  write32(kTssB + 0x64, 1);  // T
  machine.write(kCodeA, std::vector<uint8_t>{0xea, 0, 0, 0, 0, 0x20, 0x00});
  machine.write(kCodeB, std::vector<uint8_t>{0x90, 0xf4});
  halting_handler(vector::kDebug);
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  CpuState& s = machine.state();
  EXPECT_EQ(s.rip, kHandler + 1);
  EXPECT_EQ(s.tr.selector, kSelectorB);
  EXPECT_TRUE(s.dr[6] & dr6::kBt);
  EXPECT_EQ(read32(s.gpr[kRsp]), kCodeB);  // the #DB came before B's first instruction
}

// SDM 6.13: EXT (bit 0 of a selector error code) says the fault arose while delivering an
// event from outside the program (an interrupt, an earlier exception), not INT n.
class ExtBitTest : public TaskSwitchTest {
 protected:
  // Vector 0x40 is a task gate to B, whose TSS descriptor is not present.
  void gate_to_absent_tss() {
    machine.write64(kIdt + 0x40 * 8, (uint64_t{kSelectorB} << 16) | (uint64_t{0x85} << 40));
    machine.write64(kGdt + kSelectorB, segment_descriptor(kTssB, 0x67, 0x09));
    halting_handler(vector::kSegmentNotPresent);
  }
  uint32_t error_code_after_run() {
    EXPECT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
    EXPECT_EQ(machine.state().rip, kHandler + 1);
    return read32(machine.state().gpr[kRsp]);
  }
};

TEST_F(ExtBitTest, ExternalInterruptThroughTaskGateToAbsentTss) {
  gate_to_absent_tss();
  machine.write(kCodeA, std::vector<uint8_t>{0xfb, 0x90, 0xf4});  // sti; nop; hlt
  machine.environment().interrupts.push_back(0x40);
  machine.cpu().post(request::kInterrupt);
  EXPECT_EQ(error_code_after_run(), kSelectorB | 1u);
  EXPECT_EQ(machine.state().tr.selector, kSelectorA);  // no switch happened
}

TEST_F(ExtBitTest, SoftwareInterruptThroughTaskGateToAbsentTss) {
  gate_to_absent_tss();
  machine.write(kCodeA, std::vector<uint8_t>{0xcd, 0x40, 0xf4});  // int 0x40
  EXPECT_EQ(error_code_after_run(), uint32_t{kSelectorB});
}

TEST_F(ExtBitTest, ExceptionWhoseGateIsAbsent) {
  // UD2 with IDT entry 6 present-bit clear: #NP(6 * 8 + 2 + EXT) while delivering #UD.
  machine.write64(kIdt + 6 * 8, kHandler | (uint64_t{0x08} << 16) | (uint64_t{0x0e} << 40));
  halting_handler(vector::kSegmentNotPresent);
  machine.write(kCodeA, std::vector<uint8_t>{0x0f, 0x0b});
  EXPECT_EQ(error_code_after_run(), 6u * 8 + 2 + 1);
}

TEST_F(ExtBitTest, ExceptionThroughTaskGateWhoseNewTaskHasABadDataSegment) {
  // #UD through a task gate to B, whose DS is past the GDT limit: #TS(0x40 | EXT) in task B.
  machine.write64(kIdt + 6 * 8, (uint64_t{kSelectorB} << 16) | (uint64_t{0x85} << 40));
  write32(kTssB + 0x54, 0x40);
  halting_handler(vector::kInvalidTss);
  machine.write(kCodeA, std::vector<uint8_t>{0x0f, 0x0b});
  EXPECT_EQ(error_code_after_run(), 0x41u);
  EXPECT_EQ(machine.state().tr.selector, kSelectorB);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
