// Debug features and alignment checks on the core, against the Intel SDM vol. 3B chapter 17
// (and 6.8.3, 6.15 vector 17): MOV DR rules, general detect, instruction breakpoints with RF,
// data and I/O breakpoints as traps, single step over instructions that change TF, ICEBP, #DB
// held after MOV SS, and #AC at CPL 3. A #DB handler records each exception's RIP, RFLAGS
// image and DR6.
#include <gtest/gtest.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "cpu/x86/system/debug_registers.h"
#include "long_mode_fixture.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

// The few 64-bit encodings these tests use, appended at a known address.
class Code {
 public:
  explicit Code(uint64_t origin) : origin_(origin) {}
  uint64_t here() const { return origin_ + bytes_.size(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }
  Code& raw(std::initializer_list<uint8_t> list) {
    bytes_.insert(bytes_.end(), list);
    return *this;
  }
  Code& imm32(uint32_t value) {
    for (int i = 0; i < 4; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
    return *this;
  }
  Code& mov_rax(uint64_t value) {  // mov rax, imm64
    raw({0x48, 0xb8});
    for (int i = 0; i < 8; ++i) bytes_.push_back(static_cast<uint8_t>(value >> (8 * i)));
    return *this;
  }
  Code& mov_edx(uint32_t value) { return raw({0xba}).imm32(value); }
  Code& to_dr(uint8_t index) {
    return raw({0x0f, 0x23, static_cast<uint8_t>(0xc0 | (index << 3))});
  }
  Code& from_dr(uint8_t index) {
    return raw({0x0f, 0x21, static_cast<uint8_t>(0xc0 | (index << 3))});
  }
  Code& set_tf() { return raw({0x9c, 0x48, 0x81, 0x0c, 0x24}).imm32(0x100).raw({0x9d}); }
  Code& clear_tf() { return raw({0x9c, 0x48, 0x81, 0x24, 0x24}).imm32(~0x100u).raw({0x9d}); }
  Code& nop() { return raw({0x90}); }
  Code& hlt() { return raw({0xf4}); }

 private:
  uint64_t origin_;
  std::vector<uint8_t> bytes_;
};

class DebugTest : public LongModeFixture {
 protected:
  static constexpr uint64_t kCount = kData, kRips = kData + 0x100, kImages = kData + 0x200,
                            kDr6 = kData + 0x300, kTarget = kData + 0x1000;

  // A #DB handler that appends the pushed RIP, the pushed RFLAGS and DR6 to its tables,
  // clears DR6, optionally sets RF in the image (to resume at an instruction breakpoint), and
  // returns; after `limit` exceptions it halts instead.
  void recording_handler(bool set_resume_flag, uint64_t limit = 16, bool clear_dr6 = true) {
    Code h(kHandler);
    h.raw({0x50, 0x53});                                            // push rax; push rbx
    h.raw({0x48, 0x8b, 0x1c, 0x25}).imm32(kCount);                  // mov rbx, [kCount]
    h.raw({0x48, 0x81, 0xfb}).imm32(static_cast<uint32_t>(limit));  // cmp rbx, limit
    h.raw({0x72, 0x01}).hlt();                                      // jb +1; hlt
    h.raw({0x48, 0x8b, 0x44, 0x24, 0x10});                          // mov rax, [rsp+16] (RIP)
    h.raw({0x48, 0x89, 0x04, 0xdd}).imm32(kRips);                   // mov [rbx*8+kRips], rax
    h.raw({0x48, 0x8b, 0x44, 0x24, 0x20});                          // mov rax, [rsp+32] (RFLAGS)
    h.raw({0x48, 0x89, 0x04, 0xdd}).imm32(kImages);
    h.from_dr(6);  // mov rax, dr6
    h.raw({0x48, 0x89, 0x04, 0xdd}).imm32(kDr6);
    if (clear_dr6) h.raw({0x31, 0xc0}).to_dr(6);  // xor eax, eax; mov dr6, rax
    if (set_resume_flag) h.raw({0x48, 0x81, 0x4c, 0x24, 0x20}).imm32(0x10000);  // or [rsp+32]
    h.raw({0x48, 0xff, 0x04, 0x25}).imm32(kCount);  // inc qword [kCount]
    h.raw({0x5b, 0x58, 0x48, 0xcf});                // pop rbx; pop rax; iretq
    machine.write(kHandler, h.bytes());
    machine.set_long_gate(vector::kDebug, kHandler);
  }
  void start_code(uint8_t cpl, const Code& code) { start(cpl, code.bytes()); }
  uint64_t count() { return machine.read64(kCount); }
  uint64_t rip(int n) { return machine.read64(kRips + 8 * n); }
  uint64_t image(int n) { return machine.read64(kImages + 8 * n); }
  uint64_t dr6(int n) { return machine.read64(kDr6 + 8 * n); }
  // Breakpoints set from outside, as a debugger stub or a restore would.
  void set_debug_registers(std::initializer_list<std::pair<int, uint64_t>> values) {
    for (const auto& [index, value] : values) state().dr[index] = value;
    machine.cpu().state_changed();
  }
};

constexpr uint64_t kRf = rflags::kRf, kTf = rflags::kTf;

TEST_F(DebugTest, Dr6AndDr7ReadTheirFixedBits) {
  // mov rax, 0; mov dr6, rax; mov dr7, rax; mov rbx, dr6; mov rcx, dr7; hlt
  Code code(kCode);
  code.mov_rax(0).to_dr(6).to_dr(7).raw({0x0f, 0x21, 0xf3, 0x0f, 0x21, 0xf9}).hlt();
  start_code(0, code);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRbx], 0xffff0ff0u) << "DR6 reserved bits read as the SDM's fixed values";
  EXPECT_EQ(state().gpr[kRcx], 0x400u) << "DR7 bit 10 reads as 1";
  // Every bit written: DR6 keeps B0-B3, BD, BS, BT; DR7 drops bits 11, 12, 14 and 15.
  Code all(kCode);
  // (DR7 without GD, which would make the reads below #DB.)
  all.mov_rax(0xffffffff).to_dr(6).mov_rax(0xffffdfff).to_dr(7);
  all.raw({0x0f, 0x21, 0xf3, 0x0f, 0x21, 0xf9});
  all.mov_rax(0).to_dr(7).hlt();
  start_code(0, all);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().gpr[kRbx], 0xffffefffu) << "bit 12 reads as 0";
  EXPECT_EQ(state().gpr[kRcx], 0xffff07ffu);
}

TEST_F(DebugTest, MoveDebugRegisterFaults) {
  // At CPL 3: #GP(0).
  start_code(3, Code(kCode).from_dr(0));
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), kCode);
  // Bits 63:32 written to DR7 (or DR6) in 64-bit mode: #GP(0); DR0 takes a full address.
  Code upper(kCode);
  upper.mov_rax(0xffff800000001000).to_dr(0).mov_rax(uint64_t{1} << 32).to_dr(7).hlt();
  start_code(0, upper);
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), kCode + 23);
  EXPECT_EQ(state().dr[0], 0xffff800000001000u);
  EXPECT_EQ(state().dr[7], 0x400u);
  // DR4/DR5 alias DR6/DR7 without CR4.DE ...
  Code alias(kCode);
  alias.mov_rax(0x401).to_dr(5).raw({0x0f, 0x21, 0xe3}).hlt();  // mov dr5, rax; mov rbx, dr4
  start_code(0, alias);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().dr[7], 0x401u);
  EXPECT_EQ(state().gpr[kRbx], 0xffff0ff0u);
  // ... and are #UD with it.
  start_code(0, Code(kCode).from_dr(4));
  state().cr4 |= cr4::kDe;
  halting_handler(vector::kInvalidOpcode, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  // REX.R names DR8: #UD.
  start_code(0, Code(kCode).raw({0x44, 0x0f, 0x21, 0xc0}));  // mov rax, dr8
  halting_handler(vector::kInvalidOpcode, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), kCode);
}

TEST_F(DebugTest, GeneralDetectFaultsOnTheNextMoveDebugRegister) {
  // mov rax, GD | 0x400; mov dr7, rax; mov rbx, dr0 (faults); hlt
  Code code(kCode);
  code.mov_rax(dr7::kGd | 0x400).to_dr(7);
  const uint64_t faulting = code.here();
  code.raw({0x0f, 0x21, 0xc3}).hlt();
  start_code(0, code);
  recording_handler(false, 1);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 1u);
  EXPECT_EQ(rip(0), faulting) << "general detect is a fault: RIP of the MOV DR";
  EXPECT_NE(image(0) & kRf, 0u) << "a fault pushes RF = 1";
  EXPECT_EQ(dr6(0) & 0xe00f, dr6::kBd);
  EXPECT_EQ(state().dr[7] & dr7::kGd, 0u) << "GD is cleared on entry to the handler";
  // After IRET the MOV DR runs (GD clear) and reaches the HLT.
  EXPECT_EQ(state().rip, faulting + 4);
}

TEST_F(DebugTest, InstructionBreakpointFaultsAndRfResumes) {
  // Four NOPs twice round a loop; the breakpoint on the third NOP hits once per pass.
  Code code(kCode);
  code.raw({0xb9}).imm32(2);  // mov ecx, 2
  const uint64_t loop = code.here();
  code.nop().nop();
  const uint64_t target = code.here();
  code.nop().nop();
  code.raw({0xe2, static_cast<uint8_t>(loop - (code.here() + 2))}).hlt();  // loop
  start_code(0, code);
  recording_handler(true);
  set_debug_registers({{0, target}, {7, 0x400 | 0x1}});  // L0, R/W 00, LEN 00
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 2u) << "once per pass: RF lets the instruction run after the handler";
  EXPECT_EQ(rip(0), target) << "a fault: the breakpoint's instruction has not run";
  EXPECT_EQ(rip(1), target);
  EXPECT_EQ(image(0) & kRf, 0u) << "an instruction breakpoint pushes RF as it was (0)";
  EXPECT_EQ(dr6(0) & 0xe00f, 1u) << "B0";
  EXPECT_EQ(state().read_rflags() & kRf, 0u) << "RF clears once an instruction starts";
  EXPECT_EQ(state().rip, code.here());
}

TEST_F(DebugTest, InstructionBreakpointComesBeforeTheFetchPageFault) {
  // jmp to an unmapped page with a breakpoint on it: #DB first (SDM table 6-2: code breakpoint
  // before fetch faults); resumed with RF, the fetch then faults.
  constexpr uint64_t kUnmapped = 0x900000;
  Code code(kCode);
  code.raw({0xb8}).imm32(static_cast<uint32_t>(kUnmapped)).raw({0xff, 0xe0});  // mov eax; jmp rax
  start_code(0, code);
  recording_handler(true);
  halting_handler(vector::kPageFault, kHandler + 0x200);
  set_debug_registers({{0, kUnmapped}, {7, 0x401}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 1u);
  EXPECT_EQ(rip(0), kUnmapped);
  EXPECT_EQ(state().rip, kHandler + 0x201) << "then the #PF";
  EXPECT_EQ(state().cr2, kUnmapped);
}

TEST_F(DebugTest, DataBreakpointsAreTrapsAfterTheAccess) {
  // DR1: 4-byte write breakpoint at kTarget + 4; DR2: 8-byte read/write at kTarget + 0x13
  // (taken aligned down to kTarget + 0x10).
  Code code(kCode);
  code.mov_edx(static_cast<uint32_t>(kTarget));
  code.raw({0x8b, 0x42, 0x04});  // mov eax, [rdx+4]: a read, no write breakpoint
  code.raw({0xb0, 0x5a});        // mov al, 0x5a
  code.raw({0x88, 0x42, 0x07});  // mov [rdx+7], al: hits DR1
  const uint64_t after_write = code.here();
  code.raw({0x8b, 0x42, 0x0c});        // mov eax, [rdx+12]: outside both
  code.raw({0x66, 0x8b, 0x42, 0x10});  // mov ax, [rdx+0x10]: hits DR2 (aligned down)
  const uint64_t after_read = code.here();
  code.hlt();
  start_code(0, code);
  recording_handler(false);
  const uint64_t control = 0x400 | (0x3 << 2) | (0x3 << 4) |  // L1 G1 L2 G2
                           (uint64_t{0b1101} << 20) |         // DR1: R/W 01, LEN 11 (4)
                           (uint64_t{0b1011} << 24);          // DR2: R/W 11, LEN 10 (8)
  set_debug_registers({{1, kTarget + 4}, {2, kTarget + 0x13}, {7, control}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 2u);
  EXPECT_EQ(rip(0), after_write) << "a trap: RIP after the write";
  EXPECT_EQ(dr6(0) & 0xe00f, 2u) << "B1 only";
  EXPECT_EQ(rip(1), after_read);
  EXPECT_EQ(dr6(1) & 0xe00f, 4u) << "B2 only";
  EXPECT_EQ(image(1) & kRf, 0u);
  EXPECT_EQ(machine.read8(kTarget + 7), 0x5au) << "the write happened before the trap";
}

TEST_F(DebugTest, DataBreakpointCatchesStackAndLockedAccesses) {
  // push rax with RSP just above kTarget + 8: the 8-byte store hits a 1-byte breakpoint at
  // kTarget + 0xf; then lock xadd [rdx], eax on a write breakpoint.
  Code code(kCode);
  code.mov_edx(static_cast<uint32_t>(kTarget + 0x40));
  code.raw({0x48, 0xc7, 0xc4}).imm32(static_cast<uint32_t>(kTarget + 0x10));  // mov rsp, imm
  code.raw({0x50});                                                           // push rax
  const uint64_t after_push = code.here();
  code.raw({0xf0, 0x0f, 0xc1, 0x02});  // lock xadd [rdx], eax
  const uint64_t after_xadd = code.here();
  code.hlt();
  start_code(0, code);
  recording_handler(false);
  const uint64_t control = 0x400 | 0x1 | 0x4 | (uint64_t{0b0011} << 16) |  // DR0: R/W 11, LEN 00
                           (uint64_t{0b1101} << 20);                       // DR1: write, 4 bytes
  set_debug_registers({{0, kTarget + 0xf}, {1, kTarget + 0x40}, {7, control}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 2u);
  EXPECT_EQ(rip(0), after_push);
  EXPECT_EQ(dr6(0) & 0xf, 1u);
  EXPECT_EQ(rip(1), after_xadd);
  EXPECT_EQ(dr6(1) & 0xf, 2u);
}

TEST_F(DebugTest, SingleStepStartsAfterTheInstructionAfterPopf) {
  // POPF setting TF: no trap after it, one after each following instruction, including the
  // POPF that clears TF (TF was set when it began); none after that.
  Code code(kCode);
  code.set_tf();
  const uint64_t first = code.here();
  code.nop();
  const uint64_t second = code.here();
  code.nop();
  code.clear_tf();  // pushfq, and [rsp], popfq: three more traps
  const uint64_t end = code.here();
  code.nop().hlt();
  start_code(0, code);
  recording_handler(false);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 5u);
  EXPECT_EQ(rip(0), second) << "the first trap follows the instruction after POPF";
  EXPECT_EQ(rip(1), second + 1);
  EXPECT_EQ(rip(4), end) << "the POPF that clears TF still traps";
  EXPECT_EQ(dr6(0) & 0xe00f, dr6::kBs);
  EXPECT_NE(image(0) & kTf, 0u);
  EXPECT_EQ(state().rip, end + 2);
  (void)first;
}

TEST_F(DebugTest, Dr6KeepsBdBsBtButReportsB0ToB3PerException) {
  // With TF: a write that hits DR0 reports BS and B0 together; the next step reports BS with
  // B0 cleared although the handler never clears DR6; BD from a general detect stays.
  Code code(kCode);
  code.mov_edx(static_cast<uint32_t>(kTarget));
  code.set_tf();
  code.raw({0x88, 0x02});  // mov [rdx], al
  code.nop();
  code.clear_tf();
  code.mov_rax(dr7::kGd | 0x401 | (uint64_t{0b0001} << 16)).to_dr(7);
  code.raw({0x0f, 0x21, 0xc3}).hlt();  // mov rbx, dr0: general detect
  start_code(0, code);
  recording_handler(true, 16, false);
  set_debug_registers({{0, kTarget}, {7, 0x401 | (uint64_t{0b0001} << 16)}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 6u);
  EXPECT_EQ(dr6(0) & 0xe00f, dr6::kBs | 1);
  EXPECT_EQ(dr6(1) & 0xe00f, dr6::kBs) << "B0 reported per exception, BS kept";
  EXPECT_EQ(dr6(5) & 0xe00f, dr6::kBs | dr6::kBd);
}

TEST_F(DebugTest, IcebpIsATrapThatLeavesDr6Alone) {
  Code code(kCode);
  code.raw({0xf1});
  const uint64_t after = code.here();
  code.hlt();
  start_code(0, code);
  recording_handler(false);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 1u);
  EXPECT_EQ(rip(0), after);
  EXPECT_EQ(dr6(0), 0xffff0ff0u);
  EXPECT_EQ(image(0) & kRf, 0u);
  // No gate DPL check: from CPL 3 through a DPL 0 gate (the HLT after it is #GP there).
  start_code(3, code);
  machine.write64(kCount, 0);
  recording_handler(false);
  halting_handler(vector::kGeneralProtection, kHandler + 0x200);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(count(), 1u);
  EXPECT_EQ(state().rip, kHandler + 0x201);
}

TEST_F(DebugTest, MovSsHoldsDebugExceptionsForOneInstruction) {
  // With TF: mov eax, 0x10 traps; mov ss, ax does not (held); the NOP after it reports both.
  // A breakpoint on that NOP is inhibited; a data breakpoint on the MOV SS operand is held too.
  Code code(kCode);
  code.mov_edx(static_cast<uint32_t>(kTarget));
  code.set_tf();
  code.raw({0xb8, 0x10, 0, 0, 0});  // mov eax, 0x10
  const uint64_t after_move = code.here();
  code.raw({0x8e, 0x12});  // mov ss, [rdx]
  const uint64_t shadowed = code.here();
  code.nop();
  const uint64_t after_nop = code.here();
  code.clear_tf().hlt();
  start_code(0, code);
  machine.write64(kTarget, 0x10);  // the data selector
  recording_handler(false);
  const uint64_t control = 0x400 | 0x1 | 0x4 | (uint64_t{0b0111} << 20);  // DR0 exec; DR1 r/w 2
  set_debug_registers({{0, shadowed}, {1, kTarget}, {7, control}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_GE(count(), 2u);
  EXPECT_EQ(rip(0), after_move);
  EXPECT_EQ(rip(1), after_nop) << "no #DB between MOV SS and the next instruction";
  EXPECT_EQ(dr6(1) & 0xe00f, dr6::kBs | 2) << "BS with the held data breakpoint, not B0";
}

TEST_F(DebugTest, DebugExtensionsAreAdvertisedAndCr4DeIsWritable) {
  // mov eax, 1; cpuid; mov rax, cr4; or eax, 8; mov cr4, rax; hlt
  start(0,
        {0xb8, 1, 0, 0, 0, 0x0f, 0xa2, 0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x08, 0x0f, 0x22, 0xe0, 0xf4});
  halting_handler(vector::kGeneralProtection, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_NE(state().gpr[kRdx] & (1u << 2), 0u) << "CPUID.1:EDX.DE";
  EXPECT_NE(state().cr4 & cr4::kDe, 0u);
  EXPECT_EQ(state().rip, kCode + 17);
}

TEST_F(DebugTest, IoBreakpointsNeedDebugExtensions) {
  Code code(kCode);
  code.raw({0xe6, 0x80});  // out 0x80, al
  const uint64_t after = code.here();
  code.raw({0xe4, 0x81});  // in al, 0x81: outside the 1-byte breakpoint
  code.hlt();
  start_code(0, code);
  recording_handler(false);
  const uint64_t control = 0x400 | 0x10 | (uint64_t{0b0010} << 24);  // DR2: R/W 10, LEN 00
  set_debug_registers({{2, 0x80}, {7, control}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(count(), 0u) << "R/W 10 without CR4.DE matches nothing";
  start_code(0, code);
  recording_handler(false);
  state().cr4 |= cr4::kDe;
  set_debug_registers({{2, 0x80}, {7, control}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 1u);
  EXPECT_EQ(rip(0), after);
  EXPECT_EQ(dr6(0) & 0xf, 4u);
}

TEST_F(DebugTest, RepeatedStringTrapsPerIterationWithRf) {
  // rep stosb over 4 bytes with a write breakpoint on the third: the trap comes after that
  // iteration with RIP on the instruction, RCX = 1 and RF = 1 pushed.
  Code code(kCode);
  code.raw({0xbf}).imm32(static_cast<uint32_t>(kTarget));  // mov edi, kTarget
  code.raw({0xb9}).imm32(4);                               // mov ecx, 4
  const uint64_t string = code.here();
  code.raw({0xf3, 0xaa}).hlt();  // rep stosb
  start_code(0, code);
  recording_handler(false);
  set_debug_registers({{3, kTarget + 2}, {7, 0x400 | 0x40 | (uint64_t{0b0001} << 28)}});
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  ASSERT_EQ(count(), 1u);
  EXPECT_EQ(rip(0), string);
  EXPECT_NE(image(0) & kRf, 0u) << "a trap after an iteration but the last pushes RF = 1";
  EXPECT_EQ(dr6(0) & 0xf, 8u);
  EXPECT_EQ(state().gpr[kRcx], 0u) << "the instruction resumed and finished";
}

// #AC: CR0.AM, EFLAGS.AC and CPL 3, a misaligned data access (SDM 6.15, interrupt 17).
TEST_F(DebugTest, AlignmentCheckAtCpl3) {
  Code code(kCode);
  code.mov_edx(static_cast<uint32_t>(kTarget));
  code.raw({0x8b, 0x02});              // mov eax, [rdx]: aligned
  code.raw({0x66, 0x8b, 0x42, 0x02});  // mov ax, [rdx+2]: aligned
  code.raw({0x8a, 0x42, 0x03});        // mov al, [rdx+3]: bytes never fault
  const uint64_t faulting = code.here();
  code.raw({0x8b, 0x42, 0x01});  // mov eax, [rdx+1]
  code.hlt();
  auto prepare = [&](uint8_t cpl, bool am, bool ac) {
    start_code(cpl, code);
    if (am) state().cr0 |= cr0::kAm;
    state().write_rflags(state().read_rflags() | (ac ? rflags::kAc : 0));
    machine.cpu().state_changed();
    halting_handler(vector::kAlignmentCheck, kHandler);
    halting_handler(vector::kGeneralProtection, kHandler + 0x10);
  };
  prepare(3, true, true);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1) << "#AC";
  EXPECT_EQ(machine.read64(state().gpr[kRsp]), 0u) << "error code 0";
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), faulting);
  for (const auto& [cpl, am, ac] :
       {std::tuple{0, true, true}, std::tuple{3, false, true}, std::tuple{3, true, false}}) {
    prepare(static_cast<uint8_t>(cpl), am, ac);
    // The HLT at CPL 3 is #GP; at CPL 0 it halts in place.
    ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
    EXPECT_NE(state().rip, kHandler + 1) << "no #AC at CPL " << cpl << " AM " << am << " AC " << ac;
  }
}

TEST_F(DebugTest, AlignmentCheckArmedByPopfInUserMode) {
  // At CPL 3 with CR0.AM: a misaligned read passes, POPF sets AC, a misaligned push faults.
  Code code(kCode);
  code.mov_edx(static_cast<uint32_t>(kTarget));
  code.raw({0x8b, 0x42, 0x01});  // mov eax, [rdx+1]: AC clear, fine
  code.raw({0x9c, 0x48, 0x81, 0x0c, 0x24}).imm32(0x40000).raw({0x9d});  // set AC
  code.raw({0x48, 0x83, 0xec, 0x04});                                   // sub rsp, 4
  const uint64_t faulting = code.here();
  code.raw({0x50}).hlt();  // push rax
  start_code(3, code);
  state().cr0 |= cr0::kAm;
  machine.cpu().state_changed();
  halting_handler(vector::kAlignmentCheck, kHandler);
  ASSERT_EQ(run().kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(state().rip, kHandler + 1);
  EXPECT_EQ(machine.read64(state().gpr[kRsp] + 8), faulting);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
