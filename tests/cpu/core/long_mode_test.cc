// System behaviour in long mode: interrupts and IRETQ, exceptions with error codes and CR2,
// IST stacks, SYSCALL/SYSRET, privilege checks, double and triple faults, the interrupt
// shadow, port I/O permission, MMIO, self-modifying code, budget and kick exits.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "long_mode_fixture.h"

namespace lamina::cpu::x86::testing {
namespace {

class LongModeTest : public LongModeFixture {};

TEST_F(LongModeTest, ExternalInterruptAndIretq) {
  // handler: inc qword [kData]; iretq
  const std::vector<uint8_t> handler = {0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x12, 0x00, 0x48, 0xcf};
  // sti; mov ecx, 1000; loop: dec ecx; jnz loop; hlt
  start(0, {0xfb, 0xb9, 0xe8, 0x03, 0x00, 0x00, 0xff, 0xc9, 0x75, 0xfc, 0xf4});
  machine.write(kHandler, handler);
  machine.set_long_gate(0x40, kHandler);
  machine.environment().interrupts = {0x40, 0x40};
  machine.cpu().post(request::kInterrupt);
  const CpuExit exit = run();
  EXPECT_EQ(exit.kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(kData), 2u);
  EXPECT_EQ(state().gpr[kRcx], 0u);
  EXPECT_EQ(state().gpr[kRsp], kStackTop);
  EXPECT_TRUE(state().rflags & rflags::kIf);
}

TEST_F(LongModeTest, InterruptShadowAfterSti) {
  // handler: mov [kData], rax; hlt.   code: sti; mov eax, 7; mov eax, 9; hlt
  const std::vector<uint8_t> handler = {0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x12, 0x00, 0xf4};
  start(0, {0xfb, 0xb8, 0x07, 0, 0, 0, 0xb8, 0x09, 0, 0, 0, 0xf4});
  state().gpr[kRax] = 1;
  machine.write(kHandler, handler);
  machine.set_long_gate(0x41, kHandler);
  machine.environment().interrupts = {0x41};
  machine.cpu().post(request::kInterrupt);
  run();
  // The instruction after STI runs before the interrupt (SDM 6.8.3).
  EXPECT_EQ(machine.read64(kData), 7u);
}

TEST_F(LongModeTest, PageFaultReportsAddressAndErrorCode) {
  // mov dword [0x5000000], eax (not mapped: only 8 MiB are)
  start(0, {0x89, 0x04, 0x25, 0x00, 0x00, 0x00, 0x05});
  halting_handler(vector::kPageFault, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(state().cr2, 0x5000000u);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0x2u);        // write, not present, supervisor
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), kCode);   // faulting RIP
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 16), 0x08u);  // CS
}

TEST_F(LongModeTest, UserModeFaultsSwitchToRsp0AndIst) {
  // CPL 3: hlt is privileged -> #GP(0) on the RSP0 stack; #UD (ud2) uses IST 2.
  start(3, {0xf4});
  machine.write64(TestMachine::kTss + 0x24 + 8, 0x160000);  // IST2
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(state().cpl, 0);
  EXPECT_EQ(state().gpr[kRsp], 0x170000u - 6 * 8);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0u);              // error code
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 16), 0x1bu);      // user CS
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 32), kStackTop);  // user RSP
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 40), 0x23u);      // user SS

  start(3, {0x0f, 0x0b});
  machine.write64(TestMachine::kTss + 0x24 + 8, 0x160000);
  halting_handler(vector::kInvalidOpcode, kHandler + 16, 2);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 17);
  EXPECT_EQ(state().gpr[kRsp], 0x160000u - 5 * 8);
}

TEST_F(LongModeTest, SoftwareInterruptChecksGateDpl) {
  // int 0x80 from CPL 3 through a DPL 0 gate -> #GP(0x80*8+2)
  start(3, {0xcd, 0x80});
  halting_handler(0x80, kHandler + 32);
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0x80u * 8 + 2);
}

TEST_F(LongModeTest, LtrReadsTheWhole16ByteDescriptor) {
  // mov ax, 0x30; ltr ax; hlt. The TSS descriptor's upper half (0x38-0x3f) must be within the
  // GDT limit in IA-32e mode (SDM 7.2.3): with the limit at 0x37 LTR is #GP(0x30).
  const std::vector<uint8_t> code = {0x66, 0xb8, 0x30, 0x00, 0x0f, 0x00, 0xd8, 0xf4};
  start(0, code);
  state().gdtr.limit = 0x37;
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0x30u);
  // With the whole descriptor in the table, LTR loads it and marks it busy in memory.
  start(0, code);
  machine.write64(TestMachine::kGdt + 0x38, 0xffff8000u);  // base bits 63:32
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kCode + 8);
  EXPECT_EQ(state().tr.selector, 0x30);
  EXPECT_EQ(state().tr.base, 0xffff8000'00000000u | TestMachine::kTss);
  EXPECT_EQ((machine.read64(TestMachine::kGdt + 0x30) >> 40) & 0xf, 0xbu);
}

TEST_F(LongModeTest, SyscallAndSysretRoundTrip) {
  // user: mov eax, 5; syscall; mov ebx, eax; hlt(#GP at CPL3 -> ends test)
  // kernel (LSTAR): add eax, 10; o64 sysret
  start(3, {0xb8, 0x05, 0, 0, 0, 0x0f, 0x05, 0x89, 0xc3, 0xf4});
  const std::vector<uint8_t> kernel = {0x83, 0xc0, 0x0a, 0x48, 0x0f, 0x07};
  machine.write(kHandler, kernel);
  halting_handler(vector::kGeneralProtection, kHandler + 0x100);
  state().msr.lstar = kHandler;
  state().msr.star =
      (uint64_t{0x13} << 48) | (uint64_t{0x08} << 32);  // SYSRET CS = 0x13+16 = 0x23|3
  state().msr.sfmask = rflags::kIf;
  state().write_rflags(rflags::kFixed1 | rflags::kIf);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRbx], 15u);
  EXPECT_EQ(state().gpr[kRcx], kCode + 7);                       // SYSCALL saved the return RIP
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 16), 0x23u | 3);  // CS of the user code at #GP
  EXPECT_EQ(state().rip, kHandler + 0x101);
}

TEST_F(LongModeTest, DoubleFaultThenTripleFault) {
  // #PF whose gate is not present -> #NP while delivering #PF -> #DF.
  start(0, {0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x05});
  halting_handler(vector::kDoubleFault, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0u);  // #DF error code

  // Without a #DF gate the processor shuts down: reported, never a host crash.
  start(0, {0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x05});
  const CpuExit exit = run();
  EXPECT_EQ(exit.kind, CpuExit::Kind::kTripleFault);
  EXPECT_FALSE(exit.reason.empty());
}

TEST_F(LongModeTest, DivideErrorPushesFaultingRip) {
  // xor ecx, ecx; div ecx
  start(0, {0x31, 0xc9, 0xf7, 0xf1});
  halting_handler(vector::kDivideError, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), kCode + 2);
}

TEST_F(LongModeTest, PortIoHonoursIoplAndTssBitmap) {
  // CPL 0: out 0x80, al; in al, dx (dx = 0x3f8)
  start(0, {0xe6, 0x80, 0xec, 0xf4});
  state().gpr[kRax] = 0x5a;
  state().gpr[kRdx] = 0x3f8;
  machine.environment().port_value = 0x41;
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(machine.environment().io_writes.size(), 1u);
  EXPECT_EQ(machine.environment().io_writes[0].port, 0x80);
  EXPECT_EQ(machine.environment().io_writes[0].value, 0x5au);
  EXPECT_EQ(state().gpr[kRax] & 0xff, 0x41u);

  // CPL 3, IOPL 0: port 0x80 allowed by the bitmap, port 0x81 denied -> #GP(0).
  machine.environment().io_writes.clear();
  start(3, {0xe6, 0x80, 0xe6, 0x81, 0x90});
  halting_handler(vector::kGeneralProtection, kHandler);
  // TSS limit covers a bitmap at offset 0x68 with port 0x81 set.
  state().tr.limit = 0x68 + 0x20;
  machine.write64(TestMachine::kTss + 0x60, uint64_t{0x68} << 48);
  const std::vector<uint8_t> bitmap = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02};
  machine.write(TestMachine::kTss + 0x68, bitmap);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.environment().io_writes.size(), 1u);
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), kCode + 2);
}

TEST_F(LongModeTest, MmioGoesToTheEnvironment) {
  // mov rbx, 0xfee00000 (not RAM): mov dword [rbx+0x30], 0x1234; mov eax, [rbx+0x20]; hlt
  start(0, {0xbb, 0x00, 0x00, 0xe0, 0xfe, 0xc7, 0x43, 0x30, 0x34, 0x12, 0x00, 0x00, 0x8b, 0x43,
            0x20, 0xf4});
  machine.map_range(0xfee00000, 0xfee00000, 0x1000, false, true);
  machine.environment().mmio_value = 0xabcd;
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(machine.environment().mmio_writes.size(), 1u);
  EXPECT_EQ(machine.environment().mmio_writes[0].physical, 0xfee00030u);
  EXPECT_EQ(machine.environment().mmio_writes[0].size, 4);
  EXPECT_EQ(machine.environment().mmio_writes[0].value, 0x1234u);
  EXPECT_EQ(state().gpr[kRax], 0xabcdu);
}

TEST_F(LongModeTest, SelfModifyingCodeInTheSameBlock) {
  // mov byte [rip+1], 7 ; mov al, 3 (its immediate is the patched byte) ; hlt
  // C6 05 disp32 imm8: the displacement counts from the end of this 7-byte instruction.
  start(0, {0xc6, 0x05, 0x01, 0x00, 0x00, 0x00, 0x07, 0xb0, 0x03, 0xf4});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRax] & 0xff, 7u);
  // Run the same code again after the host rewrote it (a DMA-style write).
  const std::vector<uint8_t> patched = {0xb0, 0x2a, 0xf4};
  machine.write(kCode, patched);
  state().rip = kCode;
  state().halted = false;
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRax] & 0xff, 0x2au);
}

TEST_F(LongModeTest, BudgetAndKickExits) {
  start(0, {0xeb, 0xfe});  // jmp $
  CpuExit exit = run(5000);
  EXPECT_EQ(exit.kind, CpuExit::Kind::kBudgetExhausted);
  EXPECT_GE(exit.instructions, 5000u);
  EXPECT_LT(exit.instructions, 5100u);
  machine.cpu().post(request::kKick);
  exit = run(5000);
  EXPECT_EQ(exit.kind, CpuExit::Kind::kKicked);
}

TEST_F(LongModeTest, UserAccessToSupervisorPageFaults) {
  // CPL 3 reads a supervisor page -> #PF with P|U.
  start(3, {0x8b, 0x04, 0x25, 0x00, 0x00, 0x13, 0x00});
  machine.map_page(0x130000, 0x130000, false, true);
  halting_handler(vector::kPageFault, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().cr2, 0x130000u);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0x5u);
}

TEST_F(LongModeTest, NonCanonicalAddressIsGeneralProtection) {
  // mov rax, [0x0000800000000000] via movabs: A1 moffs64
  start(0, {0x48, 0xa1, 0, 0, 0, 0, 0, 0x80, 0, 0});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
}

TEST_F(LongModeTest, LockedCompareExchangeAndSwapgs) {
  // lock cmpxchg [kData], ecx; swapgs; hlt
  start(0, {0xf0, 0x0f, 0xb1, 0x0c, 0x25, 0x00, 0x00, 0x12, 0x00, 0x0f, 0x01, 0xf8, 0xf4});
  machine.write64(kData, 5);
  state().gpr[kRax] = 5;
  state().gpr[kRcx] = 9;
  state().msr.kernel_gs_base = 0x1234000;
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(kData), 9u);
  EXPECT_EQ(state().segment[kGs].base, 0x1234000u);
  EXPECT_EQ(state().msr.kernel_gs_base, 0u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

TEST_F(LongModeTest, SseAndX87GoThroughTheSimdUnit) {
  // movdqu xmm0,[kData]; paddd xmm0,xmm0; movdqu [kData+16],xmm0;
  // fld qword [kData+32]; fadd st0,st0; fstp qword [kData+40]; hlt
  start(0, {0xf3, 0x0f, 0x6f, 0x04, 0x25, 0x00, 0x00, 0x12, 0x00, 0x66, 0x0f, 0xfe, 0xc0,
            0xf3, 0x0f, 0x7f, 0x04, 0x25, 0x10, 0x00, 0x12, 0x00, 0xdd, 0x04, 0x25, 0x20,
            0x00, 0x12, 0x00, 0xd8, 0xc0, 0xdd, 0x1c, 0x25, 0x28, 0x00, 0x12, 0x00, 0xf4});
  machine.write64(kData, 0x0000000200000001);
  machine.write64(kData + 8, 0x0000000400000003);
  const double value = 1.25;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, 8);
  machine.write64(kData + 32, bits);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.read64(kData + 16), 0x0000000400000002u);
  EXPECT_EQ(machine.read64(kData + 24), 0x0000000800000006u);
  uint64_t result_bits = machine.read64(kData + 40);
  double result = 0;
  std::memcpy(&result, &result_bits, 8);
  EXPECT_EQ(result, 2.5);
}

TEST_F(LongModeTest, SimdWithTaskSwitchedRaisesDeviceNotAvailable) {
  start(0, {0x66, 0x0f, 0xfe, 0xc0});  // paddd xmm0, xmm0
  state().cr0 |= cr0::kTs;
  halting_handler(vector::kDeviceNotAvailable, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), kCode);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

TEST_F(LongModeTest, NmiIsBlockedUntilIret) {
  // NMI handler: inc qword [kData]; then either spin (no IRET) or IRETQ. Main: jmp $
  const std::vector<uint8_t> spinning = {0x48, 0xff, 0x04, 0x25, 0x00,
                                         0x00, 0x12, 0x00, 0xeb, 0xfe};
  start(0, {0xeb, 0xfe});
  machine.write(kHandler, spinning);
  machine.set_long_gate(vector::kNmi, kHandler);
  machine.environment().nmis = 2;
  machine.cpu().post(request::kNmi);
  run(200);
  machine.cpu().post(request::kNmi);
  run(200);
  EXPECT_EQ(machine.read64(kData), 1u);  // the second NMI waits for an IRET

  const std::vector<uint8_t> returning = {0x48, 0xff, 0x04, 0x25, 0x00,
                                          0x00, 0x12, 0x00, 0x48, 0xcf};
  start(0, {0xeb, 0xfe});
  state().nmi_blocked = false;
  machine.write64(kData, 0);
  machine.write(kHandler, returning);
  machine.set_long_gate(vector::kNmi, kHandler);
  machine.environment().nmis = 2;
  machine.cpu().post(request::kNmi);
  run(200);
  machine.cpu().post(request::kNmi);
  run(200);
  EXPECT_EQ(machine.read64(kData), 2u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

TEST_F(LongModeTest, TrapFlagSingleSteps) {
  // #DB handler: inc qword [kData]; iretq.  Code: pushf; or qword [rsp], 0x100; popf;
  // nop; nop; nop; pushf; and qword [rsp], ~0x100; popf; hlt.
  const std::vector<uint8_t> handler = {0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x12, 0x00, 0x48, 0xcf};
  start(0, {0x9c, 0x48, 0x81, 0x0c, 0x24, 0x00, 0x01, 0x00, 0x00, 0x9d, 0x90, 0x90,
            0x90, 0x9c, 0x48, 0x81, 0x24, 0x24, 0xff, 0xfe, 0xff, 0xff, 0x9d, 0xf4});
  machine.write(kHandler, handler);
  machine.set_long_gate(vector::kDebug, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  // A trap after every instruction that began with TF set: 3 NOPs, PUSHF, AND, POPF.
  EXPECT_EQ(machine.read64(kData), 6u);
  EXPECT_FALSE(state().rflags & rflags::kTf);
  EXPECT_TRUE(state().dr[6] & (1u << 14));
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

TEST(CrossModifyingCode, StoreByOneVcpuInvalidatesAnothersBlocks) {
  SharedCodePages shared(16 << 20);
  CpuConfiguration first_configuration;
  first_configuration.shared_code = &shared;
  TestMachine machine(16 << 20, first_configuration);
  machine.enter_long_mode(0);
  CpuConfiguration second_configuration;
  second_configuration.vcpu_index = 1;
  second_configuration.shared_code = &shared;
  Cpu other(machine.memory(), machine.environment(), second_configuration);

  // vCPU 1 runs "mov eax, 1; hlt" at LongModeFixture::kCode and caches the block.
  const std::vector<uint8_t> reader = {0xb8, 0x01, 0x00, 0x00, 0x00, 0xf4};
  machine.write(LongModeFixture::kCode, reader);
  other.state() = machine.state();
  other.state().rip = LongModeFixture::kCode;
  other.state_changed();
  ASSERT_EQ(other.run(100).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(other.state().gpr[kRax], 1u);

  // vCPU 0 stores 2 into that instruction's immediate: mov byte [LongModeFixture::kCode+1], 2; hlt
  const std::vector<uint8_t> writer = {0xc6, 0x04, 0x25, 0x01, 0x00, 0x10, 0x00, 0x02, 0xf4};
  machine.write(LongModeFixture::kCode + 0x800, writer);
  machine.state().rip = LongModeFixture::kCode + 0x800;
  machine.state().gpr[kRsp] = LongModeFixture::kStackTop;
  ASSERT_EQ(machine.cpu().run(100).kind, CpuExit::Kind::kHalted);

  // vCPU 1 sees the new code on its next entry to the block.
  other.state().rip = LongModeFixture::kCode;
  other.state().halted = false;
  ASSERT_EQ(other.run(100).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(other.state().gpr[kRax], 2u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
