// Real and protected mode: the real -> protected -> long mode boot path as firmware and
// kernels do it, real-mode INT/IRET through the IVT, a ring 3 -> ring 0 call gate with a TSS
// stack switch and parameter copy, protected-mode segment checks and far returns.
#include <gtest/gtest.h>

#include <vector>

#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

void place(TestMachine& machine, uint64_t address, std::vector<uint8_t> bytes) { machine.write(address, bytes); }

TEST(LegacyMode, RealToProtectedToLongMode) {
  TestMachine machine;
  CpuState& state = machine.state();
  // Identity map 8 MiB with 2 MiB pages for the long-mode part.
  machine.write64(0x1000, 0x2000 | 3);
  machine.write64(0x2000, 0x3000 | 3);
  for (uint64_t i = 0; i < 4; ++i) machine.write64(0x3000 + i * 8, (i << 21) | 0x83);
  // GDT: null, code32 (0x08), data32 (0x10), code64 (0x18); descriptor at 0x7e00.
  machine.write64(0x7e10, 0);
  machine.write64(0x7e18, segment_descriptor(0, 0xfffff, kCode32));
  machine.write64(0x7e20, segment_descriptor(0, 0xfffff, kData32));
  machine.write64(0x7e28, segment_descriptor(0, 0xfffff, kCode64));
  place(machine, 0x7e00, {31, 0, 0x10, 0x7e, 0, 0});
  // 16-bit: cli; lgdt [0x7e00]; mov eax, cr0; or eax, 1; mov cr0, eax; jmp dword 0x08:0x7c20
  place(machine, 0x7c00, {0xfa, 0x0f, 0x01, 0x16, 0x00, 0x7e, 0x0f, 0x20, 0xc0, 0x66, 0x83, 0xc8, 0x01,
                          0x0f, 0x22, 0xc0, 0x66, 0xea, 0x20, 0x7c, 0x00, 0x00, 0x08, 0x00});
  // 32-bit: load data segments and ESP, CR4.PAE, CR3, EFER.LME, CR0.PG, jmp 0x18:0x7c80
  place(machine, 0x7c20, {0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xd0, 0x8e, 0xc0,
                          0xbc, 0x00, 0x00, 0x09, 0x00,
                          0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0,
                          0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8,
                          0xb9, 0x80, 0x00, 0x00, 0xc0, 0x0f, 0x32, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30,
                          0x0f, 0x20, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0,
                          0xea, 0x80, 0x7c, 0x00, 0x00, 0x18, 0x00});
  // 64-bit: mov rax, 0x1122334455667788; push rax; pop rbx; hlt
  place(machine, 0x7c80, {0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x50, 0x5b, 0xf4});

  state.segment[kCs] = SegmentCache{0, 0, 0xffff, 0x9b};
  state.rip = 0x7c00;
  machine.cpu().state_changed();
  const CpuExit exit = machine.cpu().run(1000);
  ASSERT_EQ(exit.kind, CpuExit::Kind::kHalted) << exit.reason;
  EXPECT_TRUE(state.long_mode_active());
  EXPECT_TRUE(state.segment[kCs].long_mode());
  EXPECT_EQ(state.segment[kCs].selector, 0x18);
  EXPECT_EQ(state.segment[kSs].selector, 0x10);
  EXPECT_EQ(state.gpr[kRbx], 0x1122334455667788u);
  EXPECT_EQ(state.gpr[kRsp], 0x90000u);
  EXPECT_EQ(state.rip, 0x7c8du);
}

TEST(LegacyMode, RealModeInterruptAndIret) {
  TestMachine machine;
  CpuState& state = machine.state();
  place(machine, 0x40, {0x00, 0x80, 0x00, 0x00});        // IVT[0x10] = 0000:8000
  place(machine, 0x8000, {0xbb, 0x34, 0x12, 0xcf});      // mov bx, 0x1234; iret
  place(machine, 0x7c00, {0xfb, 0xcd, 0x10, 0xf4});      // sti; int 0x10; hlt
  state.segment[kCs] = SegmentCache{0, 0, 0xffff, 0x9b};
  state.segment[kSs] = SegmentCache{0, 0, 0xffff, 0x93};
  state.rip = 0x7c00;
  state.gpr[kRsp] = 0x7000;
  state.idtr = {0, 0x3ff};
  machine.cpu().state_changed();
  ASSERT_EQ(machine.cpu().run(100).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state.gpr[kRbx], 0x1234u);
  EXPECT_EQ(state.rip, 0x7c04u);
  EXPECT_EQ(state.gpr[kRsp], 0x7000u);
  EXPECT_TRUE(state.rflags & rflags::kIf);
  // The handler saw FLAGS, CS, IP on the stack: IP was the instruction after INT.
  EXPECT_EQ(machine.read8(0x7000 - 6), 0x03);
}

class ProtectedModeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const uint64_t gate = (kHandler & 0xffff) | (uint64_t{0x08} << 16) | (uint64_t{1} << 32) |
                          (uint64_t{0xec} << 40) | ((kHandler >> 16) << 48);
    const uint64_t gdt[] = {0,
                            segment_descriptor(0, 0xfffff, kCode32),
                            segment_descriptor(0, 0xfffff, kData32),
                            segment_descriptor(0, 0xfffff, kCode32 | 0x60),
                            segment_descriptor(0, 0xfffff, kData32 | 0x60),
                            segment_descriptor(kTss, 0x67, 0x89),
                            gate,
                            segment_descriptor(0, 0xfff, kData32 | 0x20)};  // 0x38: DPL 1 data
    for (size_t i = 0; i < std::size(gdt); ++i) machine.write64(kGdt + i * 8, gdt[i]);
    machine.write64(kTss + 4, (uint64_t{0x10} << 32) | 0x70000);  // ESP0, SS0
    CpuState& s = machine.state();
    s.cr0 = cr0::kPe | cr0::kEt;
    s.gdtr = {kGdt, sizeof(gdt) - 1};
    s.idtr = {0x6000, 0x7ff};
    s.segment[kCs] = SegmentCache{0x1b, 0, 0xffffffff, kCode32 | 0x60};
    for (uint8_t seg : {kEs, kSs, kDs, kFs, kGs}) s.segment[seg] = SegmentCache{0x23, 0, 0xffffffff, kData32 | 0x60};
    s.tr = SegmentCache{0x28, kTss, 0x67, 0x8b};
    s.cpl = 3;
    s.rip = kUser;
    s.gpr[kRsp] = 0x50000;
    machine.cpu().state_changed();
  }
  static constexpr uint64_t kGdt = 0x1000, kTss = 0x2000, kUser = 0x3000, kHandler = 0x4000;
  TestMachine machine;
};

TEST_F(ProtectedModeTest, CallGateSwitchesStackAndCopiesParameters) {
  // ring 3: push 0x55; call far 0x33:0; jmp $   ring 0: mov eax,[esp+8]; mov ebx,ss; retf 4
  place(machine, kUser, {0x6a, 0x55, 0x9a, 0, 0, 0, 0, 0x33, 0x00, 0xeb, 0xfe});
  place(machine, kHandler, {0x8b, 0x44, 0x24, 0x08, 0x8c, 0xd3, 0xca, 0x04, 0x00});
  const CpuExit exit = machine.cpu().run(50);
  EXPECT_EQ(exit.kind, CpuExit::Kind::kBudgetExhausted) << exit.reason;
  CpuState& s = machine.state();
  EXPECT_EQ(s.gpr[kRax], 0x55u);
  EXPECT_EQ(s.gpr[kRbx] & 0xffff, 0x10u);
  EXPECT_EQ(s.cpl, 3);
  EXPECT_EQ(s.segment[kCs].selector, 0x1b);
  EXPECT_EQ(s.segment[kSs].selector, 0x23);
  EXPECT_EQ(s.gpr[kRsp], 0x50000u);
  EXPECT_EQ(s.rip, kUser + 9);
  // The inner stack held old SS, old ESP, the parameter, CS and EIP.
  EXPECT_EQ(machine.read64(0x70000 - 4) & 0xffffffff, 0x23u);
  EXPECT_EQ(machine.read64(0x70000 - 8) & 0xffffffff, 0x50000u - 4);
  EXPECT_EQ(machine.read64(0x70000 - 12) & 0xffffffff, 0x55u);
}

TEST_F(ProtectedModeTest, SegmentLoadPrivilegeChecks) {
  // ring 3: mov ax, 0x38 (DPL 1 data); mov ds, ax -> #GP(0x38) through a 32-bit interrupt gate
  place(machine, kUser, {0x66, 0xb8, 0x38, 0x00, 0x8e, 0xd8});
  place(machine, 0x5000, {0xf4});
  const uint64_t gate = 0x5000 | (uint64_t{0x08} << 16) | (uint64_t{0x8e} << 40);
  machine.write64(0x6000 + 13 * 8, gate);
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  CpuState& s = machine.state();
  EXPECT_EQ(s.cpl, 0);
  EXPECT_EQ(s.gpr[kRsp], 0x70000u - 24);
  EXPECT_EQ(machine.read64(s.gpr[kRsp]) & 0xffffffff, 0x38u);          // error code
  EXPECT_EQ(machine.read64(s.gpr[kRsp] + 4) & 0xffffffff, kUser + 4);  // faulting EIP
  EXPECT_EQ(s.segment[kDs].selector, 0x23);
}

TEST_F(ProtectedModeTest, DescriptorReachingPastTheGdtLimitIsGeneralProtection) {
  // The GDT limit cuts descriptor 4 (0x20-0x27) in half: loading 0x23 is #GP(0x20), even
  // though the descriptor's bytes are in memory (SDM 3.5.1).
  machine.state().gdtr.limit = 0x23;
  place(machine, kUser, {0x66, 0xb8, 0x23, 0x00, 0x8e, 0xd8});  // mov ax, 0x23; mov ds, ax
  place(machine, 0x5000, {0xf4});
  machine.write64(0x6000 + 13 * 8, 0x5000 | (uint64_t{0x08} << 16) | (uint64_t{0x8e} << 40));
  ASSERT_EQ(machine.cpu().run(50).kind, CpuExit::Kind::kHalted);
  CpuState& s = machine.state();
  EXPECT_EQ(s.rip, 0x5001u);
  EXPECT_EQ(machine.read64(s.gpr[kRsp]) & 0xffffffff, 0x20u);          // error code
  EXPECT_EQ(machine.read64(s.gpr[kRsp] + 4) & 0xffffffff, kUser + 4);  // faulting EIP
}

TEST_F(ProtectedModeTest, SegmentLoadSetsTheAccessedBitInTheGdt) {
  // Descriptor 4 without its accessed bit (type 2): MOV DS writes type 3 back (SDM 3.4.5.1).
  machine.write64(kGdt + 4 * 8, segment_descriptor(0, 0xfffff, (kData32 & ~1u) | 0x60));
  place(machine, kUser, {0x66, 0xb8, 0x23, 0x00, 0x8e, 0xd8, 0xeb, 0xfe});
  machine.cpu().run(20);
  EXPECT_EQ(machine.state().segment[kDs].selector, 0x23);
  EXPECT_EQ((machine.read64(kGdt + 4 * 8) >> 40) & 0xff, 0xf3u);
}

TEST_F(ProtectedModeTest, IretReturnsToOuterLevel) {
  // Build an IRET frame on the ring 0 stack and return to ring 3.
  CpuState& s = machine.state();
  s.segment[kCs] = SegmentCache{0x08, 0, 0xffffffff, kCode32};
  s.segment[kSs] = SegmentCache{0x10, 0, 0xffffffff, kData32};
  s.cpl = 0;
  s.rip = kHandler;
  s.gpr[kRsp] = 0x70000 - 20;
  const uint32_t frame[] = {kUser, 0x1b, 0x202, 0x50000, 0x23};
  for (int i = 0; i < 5; ++i) {
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(&frame[i]);
    machine.write(0x70000 - 20 + i * 4, std::vector<uint8_t>(bytes, bytes + 4));
  }
  place(machine, kHandler, {0xcf});
  place(machine, kUser, {0xeb, 0xfe});
  machine.cpu().state_changed();
  machine.cpu().run(20);
  EXPECT_EQ(s.cpl, 3);
  EXPECT_EQ(s.rip, kUser);
  EXPECT_EQ(s.gpr[kRsp], 0x50000u);
  EXPECT_TRUE(s.rflags & rflags::kIf);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

void place(TestMachine& machine, uint64_t address, std::vector<uint8_t> bytes);

// The firmware pattern (SeaBIOS call16): 32-bit protected mode -> 16-bit protected mode ->
// real mode, then a BIOS-style INT through the IVT.
TEST(LegacyMode, ProtectedModeBackToRealMode) {
  TestMachine machine;
  CpuState& s = machine.state();
  const uint64_t gdt[] = {0, segment_descriptor(0, 0xfffff, kCode32), segment_descriptor(0, 0xfffff, kData32),
                          segment_descriptor(0, 0xffff, kCode16), segment_descriptor(0, 0xffff, kData16)};
  for (size_t i = 0; i < std::size(gdt); ++i) machine.write64(0x1000 + i * 8, gdt[i]);
  place(machine, 0x7000, {0xea, 0x10, 0x70, 0x00, 0x00, 0x18, 0x00});  // ljmp 0x18:0x7010
  place(machine, 0x7010, {0xb8, 0x20, 0x00, 0x8e, 0xd8, 0x8e, 0xd0,     // mov ax,0x20; ds; ss
                          0x0f, 0x20, 0xc0, 0x24, 0xfe, 0x0f, 0x22, 0xc0,  // clear CR0.PE
                          0xea, 0x30, 0x70, 0x00, 0x00});                 // ljmp 0000:7030
  place(machine, 0x7030, {0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x60,  // ds=ss=0, sp=6000
                          0xcd, 0x10, 0xf4});                                    // int 0x10; hlt
  place(machine, 0x40, {0x00, 0x80, 0x00, 0x00});      // IVT[0x10] = 0000:8000
  place(machine, 0x8000, {0xbb, 0x42, 0x42, 0xcf});    // mov bx, 0x4242; iret
  s.cr0 = cr0::kPe | cr0::kEt;
  s.gdtr = {0x1000, sizeof(gdt) - 1};
  s.idtr = {0, 0x3ff};
  s.segment[kCs] = SegmentCache{0x08, 0, 0xffffffff, kCode32};
  for (uint8_t seg : {kEs, kSs, kDs, kFs, kGs}) s.segment[seg] = SegmentCache{0x10, 0, 0xffffffff, kData32};
  s.rip = 0x7000;
  s.gpr[kRsp] = 0x9000;
  machine.cpu().state_changed();
  const CpuExit exit = machine.cpu().run(100);
  ASSERT_EQ(exit.kind, CpuExit::Kind::kHalted) << exit.reason;
  EXPECT_FALSE(s.protected_mode());
  EXPECT_EQ(s.segment[kCs].selector, 0);
  EXPECT_EQ(s.segment[kCs].base, 0u);
  EXPECT_EQ(s.gpr[kRbx] & 0xffff, 0x4242u);
  EXPECT_EQ(s.gpr[kRsp] & 0xffff, 0x6000u);
  EXPECT_EQ(s.rip, 0x703cu);
}

// An instruction that runs off the end of a mapped page into an unmapped one faults with
// CR2 at the second page, reported at the instruction's start.
TEST(LegacyMode, PageCrossingInstructionFetchFault) {
  TestMachine machine;
  machine.enter_long_mode(0, 2 << 20);
  // mov rax, imm64 whose last bytes lie on the unmapped page 0x200000.
  const std::vector<uint8_t> code = {0x48, 0xb8, 1, 2, 3, 4};
  machine.write(0x200000 - code.size(), code);
  machine.write(0x180000, std::vector<uint8_t>{0xf4});
  machine.set_long_gate(vector::kPageFault, 0x180000);
  CpuState& s = machine.state();
  s.rip = 0x200000 - code.size();
  s.gpr[kRsp] = 0x170000;
  ASSERT_EQ(machine.cpu().run(100).kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(s.cr2, 0x200000u);
  EXPECT_EQ(machine.read64(s.gpr[kRsp]), 0x10u);                       // not present, fetch
  EXPECT_EQ(machine.read64(s.gpr[kRsp] + 8), 0x200000u - code.size());  // faulting RIP
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
