// The JIT's fused stack runs against the interpreter: PUSH/POP runs of prologues and epilogues,
// CALL rel and RET, and RSP-relative moves between them take one TLB lookup for the run's
// bytes; a run that misses, crosses a page or faults takes the per-instruction copy, so that a
// #PF at its first, a middle or its last push leaves the guest state the interpreter leaves.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include <xbyak/xbyak.h>

#include "jit_test_program.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// Two linear stack pages: kBelow (left unmapped, read-only or writable, per test) and the
// writable page above it. Their physical pages are the two of kData's compared bytes, in the
// other order, so a run that crossed with one page's host pointer would write the wrong bytes.
constexpr uint64_t kBelow = 0x40000000;
constexpr uint64_t kAbove = kBelow + 0x1000;
// Exceptions run on IST1 with this stack, the frame within kData's compared bytes too.
constexpr uint64_t kExceptionStack = kData + 0x1800;
// The slots `function` pushes below its return address, and its frame below them.
constexpr int kPushes = 6;
constexpr int kFrame = 24;

enum class Below { kUnmapped, kReadOnly, kWritable };

void stack_pages(TestMachine& machine, Below below) {
  machine.map_page(kAbove, kData, false, true);
  if (below != Below::kUnmapped) machine.map_page(kBelow, kData + 0x1000, false, below == Below::kWritable);
  machine.write64(TestMachine::kTss + 0x24, kExceptionStack);
  for (uint8_t vector = 0; vector < 32; ++vector) machine.set_long_gate(vector, kHandler, 1);
}

// Distinct values in every register the function saves or moves.
void fill_registers(CodeGenerator& c) {
  c.mov(rax, 0x1111111111111111);
  c.mov(rbx, 0x2222222222222222);
  c.mov(rbp, 0x3333333333333333);
  c.mov(rsi, 0x4444444444444444);
  c.mov(rdi, 0x5555555555555555);
  c.mov(r12, 0x6666666666666666);
  c.mov(r13, 0x7777777777777777);
  c.mov(r14, 0x8888888888888888);
  c.mov(r15, 0x9999999999999999);
}

// A function as compilers make them: pushes with moves between them, RSP-relative loads and
// stores of every size, the pops with moves between them, RET. Changes the registers it saves
// (and rax, rdx, r8-r11) so that restoring them shows.
void function(CodeGenerator& c) {
  c.push(r15);
  c.push(r14);
  c.mov(r15, rdi);
  c.push(r13);
  c.push(r12);
  c.mov(r12, rsi);
  c.push(rbp);
  c.lea(rbp, ptr[rsp + 16]);  // reads RSP: exact inside the run
  c.push(rbx);
  c.sub(rsp, kFrame);  // a frame: RSP moved by a constant inside the run
  c.mov(qword[rsp + 8], rax);
  c.mov(r9, qword[rsp + 16]);
  c.mov(dword[rsp + 4], 0x77);
  c.mov(r10d, dword[rsp + 4]);
  c.mov(byte[rsp + 1], al);
  c.mov(rdx, qword[rsp + 8 * kPushes + kFrame]);  // the return address
  c.movzx(r11d, word[rsp]);  // not one of the run's forms: ends it
  c.add(rax, r15);
  c.xor_(ebx, ebx);
  c.not_(r12);
  c.mov(r13, rdx);
  c.lea(r14, ptr[rax + rbp]);
  c.add(rbp, 3);
  c.mov(r8, rbp);
  c.mov(r11, qword[rsp + 16]);
  c.add(rsp, kFrame);
  c.pop(rbx);
  c.pop(rbp);
  c.mov(rsi, r12);
  c.pop(r12);
  c.pop(r13);
  c.pop(r14);
  c.pop(r15);
  c.ret();
}

// Calls `function` in a translated loop on a stack in kAbove, then once more with RSP at
// `entry` (its CALL's push in kAbove, some of the function's below).
std::vector<uint8_t> program(uint64_t entry) {
  return assemble([&](CodeGenerator& c) {
    Xbyak::Label loop, body;
    fill_registers(c);
    c.mov(rsp, kAbove + 0xf00);
    c.mov(ecx, 40);
    c.L(loop);
    // A run with a final CALL (moves between), and the pops after the return.
    c.push(rcx);
    c.push(rdi);
    c.mov(rdi, rcx);
    c.call(body);
    c.pop(rdi);
    c.pop(rcx);
    c.add(rdi, rax);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.mov(rsp, entry);
    c.call(body);
    c.mov(r8, 0x1234);
    c.mov(rsp, kStackTop);  // run_on reads the final stack at RSP as a physical address
    c.hlt();
    c.L(body);
    function(c);
  });
}

Outcome compare_stack(uint64_t entry, Below below) {
  const auto setup = [below](TestMachine& machine) { stack_pages(machine, below); };
  const std::vector<uint8_t> code = program(entry);
  const Outcome translated = compare_with(code, setup);
  EXPECT_GT(translated.translations, 0u);
  return translated;
}

// RSP on the final call such that the function's push number `push` (1-based) is the first
// one below kAbove (kPushes + 1: its first store into the frame, at kAbove - 16); the CALL's
// own push lands in kAbove.
uint64_t entry_faulting_at(int push) { return kAbove + 8 + 8 * static_cast<uint64_t>(push - 1); }
uint64_t first_address_below(int push) { return push <= kPushes ? kAbove - 8 : kAbove - 16; }

TEST(JitStackRunTest, RunsWithinAPageMatchTheInterpreter) {
  const Outcome outcome = compare_stack(kAbove + 0x800, Below::kUnmapped);
  expect_no_exception(outcome);
  EXPECT_EQ(outcome.state.gpr[kR8], 0x1234u);
}

TEST(JitStackRunTest, ARunCrossingIntoTheNextPageMatchesTheInterpreter) {
  for (int push = 1; push <= kPushes + 1; ++push) {
    SCOPED_TRACE(push);
    const Outcome outcome = compare_stack(entry_faulting_at(push), Below::kWritable);
    expect_no_exception(outcome);
  }
}

TEST(JitStackRunTest, APageFaultAtAnyPushOfARunLeavesTheInterpretersState) {
  // The first, a middle and the last push of the prologue, every other one, and the first
  // store into the frame after them.
  for (int push = 1; push <= kPushes + 1; ++push) {
    SCOPED_TRACE(push);
    const Outcome outcome = compare_stack(entry_faulting_at(push), Below::kUnmapped);
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
    EXPECT_EQ(outcome.state.cr2, first_address_below(push));
  }
}

TEST(JitStackRunTest, PushesCrossingIntoAReadOnlyPageFault) {
  for (int push : {1, 3, kPushes, kPushes + 1}) {
    SCOPED_TRACE(push);
    const Outcome outcome = compare_stack(entry_faulting_at(push), Below::kReadOnly);
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
    EXPECT_EQ(outcome.state.cr2, first_address_below(push));
    EXPECT_EQ(outcome.stack_word, 3u);  // the error code: present, write
  }
}

// A loop of a read-only run (pops, a load) from the read-only page, and a run of pushes and a
// RET; in its last round that run faults: on the read-only page (`read_only_pushes`), or at
// a RET to a non-canonical target, with the pushes done (#GP).
Outcome compare_last_round_fault(bool read_only_pushes) {
  const auto code = assemble([&](CodeGenerator& c) {
    Xbyak::Label loop, next;
    fill_registers(c);
    c.mov(r11, read_only_pushes ? kBelow + 0x800 : 0x0000800000000000);
    c.mov(ecx, 30);
    c.L(loop);
    c.mov(rsp, kBelow + 0x100);
    c.pop(rax);
    c.pop(rbx);
    c.mov(rdx, rax);
    c.mov(r8, qword[rsp + 8]);
    c.pop(rsi);
    c.add(rdi, rsi);
    c.mov(rsp, kAbove + 0x800);
    c.lea(rax, ptr[rip + next]);
    c.cmp(ecx, 1);
    c.cmove(read_only_pushes ? rsp : rax, r11);
    c.push(rbx);
    c.push(rax);
    c.ret();
    c.L(next);
    c.pop(rbx);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.mov(rsp, kStackTop);
    c.hlt();
  });
  const auto setup = [](TestMachine& machine) {
    stack_pages(machine, Below::kReadOnly);
    for (uint64_t slot = 0; slot < 4; ++slot) machine.write64(kData + 0x1100 + 8 * slot, 0x100 + slot);
  };
  const Outcome translated = compare_with(code, setup);
  EXPECT_EQ(translated.state.rip, kHandler + 1);
  return translated;
}

TEST(JitStackRunTest, PushesWithinAReadOnlyPageFault) {
  const Outcome outcome = compare_last_round_fault(true);
  EXPECT_EQ(outcome.state.cr2, kBelow + 0x7f8);
  EXPECT_EQ(outcome.stack_word, 3u);  // the error code: present, write
}

TEST(JitStackRunTest, ARetToANonCanonicalTargetAfterPushesOfItsRunFaults) {
  const Outcome outcome = compare_last_round_fault(false);
  EXPECT_EQ(outcome.stack_word, 0u);  // #GP(0)
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
