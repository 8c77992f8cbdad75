// Architectural details that outside x86 conformance kernels check, on the core itself: the RF
// flag in the RFLAGS image a fault pushes, SYSCALL from compatibility mode (AMD: through
// CSTAR), VMCALL/VMMCALL answered as KVM answers an unknown hypercall, and the AMD
// performance-counter and machine-check MSRs reached through RDMSR/WRMSR.
#include <gtest/gtest.h>

#include <vector>

#include "long_mode_fixture.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

class ConformanceTest : public LongModeFixture {
 protected:
  // The RFLAGS image of the 64-bit frame at RSP (with or without an error code).
  uint64_t pushed_rflags(bool error_code) {
    return machine.read64(state().gpr[kRsp] + (error_code ? 24 : 16));
  }
};

TEST_F(ConformanceTest, FaultsPushRflagsWithResumeFlag) {
  // ud2 -> #UD (fault, no error code).
  start(0, {0x0f, 0x0b});
  halting_handler(vector::kInvalidOpcode, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), kCode) << "faulting RIP";
  EXPECT_NE(pushed_rflags(false) & rflags::kRf, 0u) << "SDM 17.3.1.1: faults push RF = 1";

  // rdmsr of an MSR the model lacks -> #GP(0) (fault, error code).
  start(0, {0xb9, 0x78, 0x56, 0x34, 0x12, 0x0f, 0x32});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), kCode + 5);
  EXPECT_NE(pushed_rflags(true) & rflags::kRf, 0u);
}

TEST_F(ConformanceTest, TrapsAndSoftwareInterruptsPushRflagsWithoutResumeFlag) {
  // ud2 (its handler skips it: add qword [rsp], 2; iretq), then int3, whose image must not
  // carry the RF the IRET loaded: RF clears once an instruction completes.
  start(0, {0x0f, 0x0b, 0x90, 0xcc});
  const std::vector<uint8_t> skip = {0x48, 0x83, 0x04, 0x24, 0x02, 0x48, 0xcf};
  machine.write(kHandler, skip);
  machine.set_long_gate(vector::kInvalidOpcode, kHandler);
  halting_handler(vector::kBreakpoint, kHandler + 0x100);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 0x101);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), kCode + 4) << "INT3 pushes the next RIP";
  EXPECT_EQ(pushed_rflags(false) & rflags::kRf, 0u);
  EXPECT_EQ(state().rflags & rflags::kRf, 0u);
}

TEST_F(ConformanceTest, SyscallFromCompatibilityModeEntersThroughCstar) {
  // 32-bit user code (CS 0x2b, L = 0) under a 64-bit kernel: mov eax, 5; syscall; hlt.
  start(3, {0xb8, 0x05, 0, 0, 0, 0x0f, 0x05, 0xf4});
  state().segment[kCs] = SegmentCache{0x2b, 0, 0xffffffff, static_cast<uint16_t>(kCode32 | 0x60)};
  machine.cpu().state_changed();
  halting_handler(vector::kInvalidOpcode, kHandler + 0x200);
  const uint8_t halt[] = {0xf4};
  machine.write(kHandler, halt);          // CSTAR target
  machine.write(kHandler + 0x100, halt);  // LSTAR target (must not be taken)
  state().msr.cstar = kHandler;
  state().msr.lstar = kHandler + 0x100;
  state().msr.star = (uint64_t{0x1b} << 48) | (uint64_t{0x08} << 32);
  state().msr.sfmask = rflags::kIf | rflags::kDf;
  state().write_rflags(rflags::kFixed1 | rflags::kIf | rflags::kDf | rflags::kCf);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1) << "entered through CSTAR";
  EXPECT_EQ(state().gpr[kRcx], kCode + 7) << "RCX = the next RIP";
  EXPECT_EQ(state().gpr[kR11], rflags::kFixed1 | rflags::kIf | rflags::kDf | rflags::kCf);
  EXPECT_EQ(state().read_rflags(), rflags::kFixed1 | rflags::kCf) << "masked by SFMASK";
  EXPECT_EQ(state().segment[kCs].selector, 0x08);
  EXPECT_TRUE(state().segment[kCs].long_mode());
  EXPECT_EQ(state().segment[kSs].selector, 0x10);
  EXPECT_EQ(state().cpl, 0);
}

TEST_F(ConformanceTest, SyscallWithoutSceIsInvalidOpcode) {
  start(0, {0x0f, 0x05});
  state().msr.efer &= ~efer::kSce;
  halting_handler(vector::kInvalidOpcode, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
}

TEST_F(ConformanceTest, HypercallsAnswerAsKvmWithoutHypercalls) {
  // vmmcall; mov rbx, rax; mov eax, 7; vmcall; hlt
  start(0, {0x0f, 0x01, 0xd9, 0x48, 0x89, 0xc3, 0xb8, 0x07, 0, 0, 0, 0x0f, 0x01, 0xc1, 0xf4});
  halting_handler(vector::kInvalidOpcode, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kCode + 15) << "no #UD; RIP moved past both";
  EXPECT_EQ(state().gpr[kRbx], static_cast<uint64_t>(-1000)) << "-KVM_ENOSYS from VMMCALL";
  EXPECT_EQ(state().gpr[kRax], static_cast<uint64_t>(-1000)) << "-KVM_ENOSYS from VMCALL";

  // From CPL 3 KVM answers -KVM_EPERM; in 32-bit code the result is truncated.
  start(3, {0x0f, 0x01, 0xd9, 0x89, 0xc3, 0x0f, 0x01, 0xc1, 0x0f, 0x0b});
  state().segment[kCs] = SegmentCache{0x2b, 0, 0xffffffff, static_cast<uint16_t>(kCode32 | 0x60)};
  state().gpr[kRax] = 0x1234567812345678;
  machine.cpu().state_changed();
  halting_handler(vector::kInvalidOpcode, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), kCode + 8) << "the ud2 after both";
  EXPECT_EQ(state().gpr[kRbx], 0xffffffffu);
  EXPECT_EQ(state().gpr[kRax], 0xffffffffu);
}

// wrmsr ECX=index EDX:EAX=value then rdmsr into EDX:EAX; a #GP handler halts.
std::vector<uint8_t> write_then_read(uint32_t index, uint32_t low, uint32_t high) {
  std::vector<uint8_t> code;
  auto load = [&code](uint8_t opcode, uint32_t value) {  // mov r32, imm32
    code.push_back(opcode);
    for (int i = 0; i < 4; ++i) code.push_back(static_cast<uint8_t>(value >> (8 * i)));
  };
  load(0xb9, index);
  load(0xb8, low);
  load(0xba, high);
  // wrmsr; xor eax, eax; xor edx, edx; rdmsr; hlt
  for (uint8_t byte : {0x0f, 0x30, 0x31, 0xc0, 0x31, 0xd2, 0x0f, 0x32, 0xf4}) code.push_back(byte);
  return code;
}

TEST_F(ConformanceTest, AmdPerformanceCounterMsrsThroughTheCore) {
  start(0, write_then_read(0xc0010005, 0x89abcdef, 0xffff0123));
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kCode + 24) << "no #GP";
  EXPECT_EQ(state().gpr[kRax], 0x89abcdefu);
  EXPECT_EQ(state().gpr[kRdx], 0x0123u) << "48-bit counter";
  EXPECT_EQ(state().msr.perf_counter[1], 0x012389abcdefu) << "in the CPU state";

  // PERFCTR_CORE is not advertised by default: its MSRs are #GP.
  start(0, write_then_read(0xc0010200, 0, 0));
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
}

TEST_F(ConformanceTest, MachineCheckMsrsThroughTheCore) {
  // MCi_CTL of bank 3 takes all ones and reads it back.
  start(0, write_then_read(0x40c, 0xffffffff, 0xffffffff));
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kCode + 24);
  EXPECT_EQ(state().gpr[kRax], 0xffffffffu);
  EXPECT_EQ(state().gpr[kRdx], 0xffffffffu);
  // MCi_STATUS takes only zero.
  start(0, write_then_read(0x40d, 1, 0));
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  // CR4.MCE is writable: mov rax, cr4; bts rax, 6; mov cr4, rax; mov rbx, cr4; hlt
  start(0,
        {0x0f, 0x20, 0xe0, 0x48, 0x0f, 0xba, 0xe8, 0x06, 0x0f, 0x22, 0xe0, 0x0f, 0x20, 0xe3, 0xf4});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kCode + 15);
  EXPECT_NE(state().gpr[kRbx] & cr4::kMce, 0u);
}

// One MSR store: what WRMSR writes is in CpuState::msr (what state()/set_state() move for a
// checkpoint or migration), and a CpuState loaded into another CPU reads back the same.
TEST_F(ConformanceTest, MsrsLiveInTheCpuState) {
  // wrmsr PAT (0x277) = 0x0006060606060606, then hlt
  start(0, write_then_read(0x277, 0x06060606, 0x00060606));
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(state().rip, kCode + 24);
  EXPECT_EQ(state().msr.pat, 0x0006060606060606u);
  // FS_BASE is the FS segment base.
  start(0, write_then_read(0xc0000100, 0x12345000, 0));
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().segment[kFs].base, 0x12345000u);
  EXPECT_EQ(state().msr.pat, 0x0006060606060606u);

  // Moved into another CPU, the state answers RDMSR and SYSCALL the same.
  TestMachine other;
  other.enter_long_mode(0);
  CpuState moved = state();
  moved.msr.lstar = kHandler;
  other.cpu().state() = moved;
  other.cpu().state_changed();
  // rdmsr PAT; mov rbx, rax; mov ecx, 0xc0000100; rdmsr; syscall
  const std::vector<uint8_t> code = {0xb9, 0x77, 0x02, 0, 0,    0x0f, 0x32, 0x48, 0x89, 0xc3,
                                     0xb9, 0x00, 0x01, 0, 0xc0, 0x0f, 0x32, 0x0f, 0x05};
  other.write(kCode, code);
  const uint8_t halt[] = {0xf4};
  other.write(kHandler, halt);
  other.state().rip = kCode;
  other.state().halted = false;
  ASSERT_EQ(other.cpu().run(100).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(other.state().gpr[kRbx], 0x06060606u);
  EXPECT_EQ(other.state().gpr[kRax], 0x12345000u);
  EXPECT_EQ(other.state().rip, kHandler + 1) << "SYSCALL went through the moved LSTAR";
}

// MOV to CR0/CR3/CR4 are system/control_registers' rules: CR3 bits above MAXPHYADDR and CR4
// bits the model does not advertise are #GP; CR0's reserved low bits are ignored.
TEST_F(ConformanceTest, ControlRegisterWritesFollowTheModel) {
  // mov rax, 1 << 45; mov rbx, cr3; or rax, rbx; mov cr3, rax
  start(0, {0x48, 0xb8, 0,    0,    0,    0,    0,    0x20, 0,    0,
            0x0f, 0x20, 0xdb, 0x48, 0x09, 0xd8, 0x0f, 0x22, 0xd8, 0xf4});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1) << "CR3 bit 45 is above the model's 40 physical bits";
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), kCode + 16);
  // mov rax, cr4; or eax, 1 (VME, not advertised); mov cr4, rax
  start(0, {0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x01, 0x0f, 0x22, 0xe0, 0xf4});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(state().cr4 & cr4::kVme, 0u);
  // mov rax, cr0; or eax, 0x40 (reserved); mov cr0, rax; mov rbx, cr0; hlt
  start(0, {0x0f, 0x20, 0xc0, 0x83, 0xc8, 0x40, 0x0f, 0x22, 0xc0, 0x0f, 0x20, 0xc3, 0xf4});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kCode + 13);
  EXPECT_EQ(state().gpr[kRbx] & 0x40, 0u);
}

// 32-bit protected mode at CPL 0 (flat code 0x08, data 0x10; #GP halts at kGpHandler), with a
// PAE table at kPdpt for CR4.PAE set: MOV to CR0/CR3 loads the four PDPTE registers (SDM
// 4.4.1); walks use them, not the table in memory, and a present PDPTE with reserved bits makes
// the load #GP.
class Protected32Test : public ::testing::Test {
 protected:
  static constexpr uint64_t kGdt = 0x1000, kIdt = 0x2000, kCode32At = 0x3000, kGpHandler = 0x4000,
                            kPdpt = 0x5000, kDirectory = 0x6000;
  void SetUp() override {
    machine.write64(kGdt + 8, segment_descriptor(0, 0xfffff, kCode32));
    machine.write64(kGdt + 16, segment_descriptor(0, 0xfffff, kData32));
    // #GP: 32-bit interrupt gate to a HLT.
    machine.write64(kIdt + 13 * 8, (kGpHandler & 0xffff) | (uint64_t{0x08} << 16) |
                                       (uint64_t{0x8e} << 40) | ((kGpHandler >> 16) << 48));
    const uint8_t halt[] = {0xf4};
    machine.write(kGpHandler, halt);
    machine.write64(kPdpt, kDirectory | 1);
    machine.write64(kDirectory, 0x83);  // 2 MiB page at 0: present, writable, PS
    machine.write64(0x100, 0x12345678);
    CpuState& s = machine.state();
    s.cr0 = cr0::kPe | cr0::kEt;
    s.cr4 = cr4::kPae;
    s.cr3 = kPdpt;
    s.gdtr = {kGdt, 23};
    s.idtr = {kIdt, 0x7ff};
    s.segment[kCs] = SegmentCache{0x08, 0, 0xffffffff, kCode32};
    for (uint8_t seg : {kEs, kSs, kDs, kFs, kGs})
      s.segment[seg] = SegmentCache{0x10, 0, 0xffffffff, kData32};
    s.rip = kCode32At;
    s.gpr[kRsp] = 0x80000;
    machine.cpu().state_changed();
  }
  // mov eax, cr0; or eax, 0x80000000; mov cr0, eax (paging on), then `rest`.
  void run_code(std::vector<uint8_t> rest) {
    std::vector<uint8_t> code = {0x0f, 0x20, 0xc0, 0x0d, 0, 0, 0, 0x80, 0x0f, 0x22, 0xc0};
    code.insert(code.end(), rest.begin(), rest.end());
    machine.write(kCode32At, code);
    ASSERT_EQ(machine.cpu().run(1000).kind, CpuExit::Kind::kHalted);
  }
  TestMachine machine;
};

TEST_F(Protected32Test, WalksUseThePdpteRegisters) {
  // mov dword [kPdpt], 0 (PDPTE 0 not present in memory); invlpg [0x100]; mov ebx, [0x100]; hlt
  run_code({0xc7, 0x05, 0x00, 0x50, 0, 0,    0,    0,    0,    0, 0x0f, 0x01,
            0x3d, 0x00, 0x01, 0,    0, 0x8b, 0x1d, 0x00, 0x01, 0, 0,    0xf4});
  EXPECT_EQ(machine.state().rip, kCode32At + 35) << "no #PF: the loaded PDPTE still maps";
  EXPECT_EQ(machine.state().gpr[kRbx], 0x12345678u);
  EXPECT_TRUE(machine.state().pae_pdptes_loaded);
}

// The pushes of an event's frame match no data breakpoint (like the long-mode frame and the
// IDT/TSS reads, implicit accesses), while an instruction's own push does: a write breakpoint
// on the stack below ESP = 0x80000 stays quiet through INT 0x20 and catches PUSH EAX.
TEST_F(Protected32Test, EventFramePushesMatchNoDataBreakpoint) {
  constexpr uint64_t kDebugHandler = 0x4100, kIntHandler = 0x4200;
  for (const auto& [vector, handler] : {std::pair{1, kDebugHandler}, std::pair{0x20, kIntHandler}})
    machine.write64(kIdt + vector * 8, (handler & 0xffff) | (uint64_t{0x08} << 16) |
                                           (uint64_t{0x8e} << 40) | ((handler >> 16) << 48));
  const uint8_t halt[] = {0xf4};
  machine.write(kDebugHandler, halt);
  // The INT 0x20 handler: push eax (hits); hlt
  const uint8_t push_then_halt[] = {0x50, 0xf4};
  machine.write(kIntHandler, push_then_halt);
  // DR0 on the frame's EIP slot, DR1 where the handler's PUSH goes; both write, 4 bytes.
  machine.state().dr[0] = 0x7fff4;
  machine.state().dr[1] = 0x7fff0;
  machine.state().dr[7] = 0x405 | (uint64_t{0b1101'1101} << 16);
  machine.cpu().state_changed();
  run_code({0xcd, 0x20});  // int 0x20: EFLAGS, CS, EIP at 0x7fffc, 0x7fff8, 0x7fff4
  EXPECT_EQ(machine.state().rip, kDebugHandler + 1) << "#DB after the handler's PUSH";
  EXPECT_EQ(machine.read64(machine.state().gpr[kRsp]) & 0xffffffff, kIntHandler + 1)
      << "the #DB trap follows PUSH EAX, not the INT frame";
  EXPECT_EQ(machine.state().dr[6] & 0xf, 2u) << "B1 only: the frame's push matched nothing";
}

TEST_F(Protected32Test, ReservedBitsInAPdpteMakeTheCr3LoadFault) {
  // mov dword [kPdpt + 8], 0x6021 (present, reserved bit 5); mov eax, cr3; mov cr3, eax; hlt
  run_code(
      {0xc7, 0x05, 0x08, 0x50, 0, 0, 0x21, 0x60, 0, 0, 0x0f, 0x20, 0xd8, 0x0f, 0x22, 0xd8, 0xf4});
  EXPECT_EQ(machine.state().rip, kGpHandler + 1);
  EXPECT_EQ(machine.read64(machine.state().gpr[kRsp]) & 0xffffffff, 0u) << "#GP(0)";
  EXPECT_EQ(machine.read64(machine.state().gpr[kRsp] + 4) & 0xffffffff, kCode32At + 24)
      << "the MOV to CR3";
}

// AMD's SYSCALL in legacy protected mode (no long mode): ECX = next EIP, CS/SS from
// STAR[47:32], EIP = STAR[31:0], IF/VM/RF cleared (AMD APM vol. 3, SYSCALL).
TEST_F(Protected32Test, SyscallInLegacyModeEntersThroughStar) {
  CpuState& s = machine.state();
  s.msr.efer = efer::kSce;
  s.msr.star = (uint64_t{0x08} << 32) | kGpHandler;
  s.write_rflags(rflags::kFixed1 | rflags::kIf | rflags::kCf);
  const uint8_t code[] = {0x0f, 0x05, 0xf4};  // syscall; hlt (not reached)
  machine.write(kCode32At, code);
  ASSERT_EQ(machine.cpu().run(100).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(s.rip, kGpHandler + 1) << "entered at STAR[31:0]";
  EXPECT_EQ(s.gpr[kRcx], kCode32At + 2);
  EXPECT_EQ(s.segment[kCs].selector, 0x08);
  EXPECT_TRUE(s.segment[kCs].default_big());
  EXPECT_EQ(s.segment[kSs].selector, 0x10);
  EXPECT_EQ(s.read_rflags(), rflags::kFixed1 | rflags::kCf);
}

// The A20 gate (Cpu::set_a20_enabled): while it is off, bit 20 of every physical address is
// 0, so FFFF:0010 in real mode is address 0 (the 8086 wraparound); on again, it is 1 MiB.
TEST(A20Gate, MasksPhysicalAddressBit20WhileOff) {
  TestMachine machine;
  machine.write64(0x000000, 0x1111);
  machine.write64(0x100000, 0x2222);
  // mov ax, 0xffff; mov ds, ax; mov bx, [0x10]; hlt
  const uint8_t code[] = {0xb8, 0xff, 0xff, 0x8e, 0xd8, 0x8b, 0x1e, 0x10, 0x00, 0xf4};
  machine.write(0x7c00, code);
  auto run_from_start = [&machine] {
    CpuState& state = machine.state();
    state.segment[kCs] = SegmentCache{0, 0, 0xffff, 0x9b};
    state.rip = 0x7c00;
    state.halted = false;
    machine.cpu().state_changed();
    EXPECT_EQ(machine.cpu().run(100).kind, CpuExit::Kind::kHalted);
    return machine.state().gpr[kRbx] & 0xffff;
  };
  EXPECT_EQ(run_from_start(), 0x2222u) << "A20 is on after reset";
  machine.cpu().set_a20_enabled(false);
  EXPECT_EQ(run_from_start(), 0x1111u) << "wrapped to 0";
  machine.cpu().set_a20_enabled(true);
  EXPECT_EQ(run_from_start(), 0x2222u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

// With A20 off, the page walk's table addresses lose bit 20 too: CR3 = 1 MiB + the real PML4
// walks the real tables. With A20 on, that page is empty: nothing is mapped, not even the IDT,
// so the fetch #PF ends in a triple fault. Code and data sit at addresses with bit 20 clear.
TEST_F(ConformanceTest, PageWalksFollowTheA20Gate) {
  constexpr uint64_t kLowCode = 0x200000, kValue = 0x400000;
  // mov rax, [0x400000]; hlt
  const std::vector<uint8_t> code = {0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, 0xf4};
  for (const bool a20 : {false, true}) {
    start(0, {0xf4});
    machine.write(kLowCode, code);
    machine.write64(kValue, 0x1234);
    state().rip = kLowCode;
    state().cr3 = TestMachine::kTableRoot + 0x100000;
    machine.cpu().state_changed();
    machine.cpu().set_a20_enabled(a20);
    const CpuExit exit = run();
    if (a20) {
      EXPECT_EQ(exit.kind, CpuExit::Kind::kTripleFault) << "A20 on: the empty PML4 at 1 MiB + root";
    } else {
      ASSERT_EQ(exit.kind, CpuExit::Kind::kHalted) << exit.reason;
      EXPECT_EQ(state().rip, kLowCode + code.size());
      EXPECT_EQ(state().gpr[kRax], 0x1234u);
    }
  }
}

// IA32_APIC_BASE moved over RAM: the xAPIC page there is the LAPIC's (MMIO), not memory, until
// the base moves away or the APIC is disabled (SDM 11.4.4-11.4.5).
TEST_F(ConformanceTest, RelocatedApicPageOverRamIsDecoded) {
  constexpr uint64_t kPage = 0x300000;
  // mov rsi, [kPage + 0x30]; relocate APIC_BASE (wrmsr with EDX:EAX); mov rbx, [kPage + 0x30]
  auto program = [](uint32_t base) {
    std::vector<uint8_t> bytes = {0x48, 0x8b, 0x34, 0x25, 0x30, 0x00, 0x30, 0x00,  // mov rsi, [..]
                                  0xb9, 0x1b, 0x00, 0x00, 0x00, 0xb8};  // mov ecx; mov eax
    for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<uint8_t>(base >> (8 * i)));
    for (uint8_t byte :
         {0x31, 0xd2, 0x0f, 0x30,                                 // xor edx, edx; wrmsr
          0x48, 0x8b, 0x1c, 0x25, 0x30, 0x00, 0x30, 0x00, 0xf4})  // mov rbx, [..]; hlt
      bytes.push_back(byte);
    return bytes;
  };
  machine.write64(kPage + 0x30, 0x5555);
  machine.environment().mmio_value = 0x50014;
  // RAM first, then the APIC page moved there (enabled, xAPIC): MMIO.
  start(0, program(static_cast<uint32_t>(kPage | kApicBaseEnable | kApicBaseBsp)));
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRsi], 0x5555u);
  EXPECT_EQ(state().gpr[kRbx], 0x50014u) << "the LAPIC answers at its relocated page";
  ASSERT_EQ(machine.environment().mmio_reads.size(), 1u);
  EXPECT_EQ(machine.environment().mmio_reads[0].physical, kPage + 0x30);
  // Disabled (EN clear): RAM again.
  start(0, program(static_cast<uint32_t>(kPage | kApicBaseBsp)));
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRsi], 0x50014u);
  EXPECT_EQ(state().gpr[kRbx], 0x5555u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
