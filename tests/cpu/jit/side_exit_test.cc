// Blocks that run on past a conditional branch (64-bit code: translate_block goes on past a
// Jcc whose fall-through lies in the page). The interpreter must end such a block where the
// Jcc is taken; the JIT makes the taken way a side exit: an exit site counting the
// instructions up to the Jcc, with the dirty cached registers and every flag in CpuState,
// while the fall-through goes on with the registers cached and the flag producer known.
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

TEST(JitSideExitTest, ALoopWithAMidBlockJccMatchesTheInterpreterAtEveryBudget) {
  const std::vector<uint8_t> program = assemble([](CodeGenerator& c) {
    Xbyak::Label loop, skip;
    c.mov(ecx, 3000);
    c.xor_(eax, eax);
    c.xor_(ebx, ebx);
    c.xor_(esi, esi);
    c.xor_(edi, edi);
    c.mov(edx, 3);
    c.L(loop);
    c.add(rax, rcx);
    c.dec(edx);
    c.jz(skip, CodeGenerator::T_NEAR);  // taken every third round: a side exit
    c.add(rbx, rax);
    c.lea(rsi, ptr[rsi + rbx * 2 + 1]);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);  // the one-block loop's back edge
    c.hlt();
    c.L(skip);
    c.mov(edx, 3);
    c.inc(rdi);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.hlt();
  });
  // What the program computes, round by round.
  uint64_t rax = 0, rbx = 0, rsi = 0, rdi = 0, rdx = 3;
  for (uint64_t rcx = 3000; rcx != 0; --rcx) {
    rax += rcx;
    if (--rdx == 0) {
      rdx = 3;
      ++rdi;
    } else {
      rbx += rax;
      rsi += rbx * 2 + 1;
    }
  }
  const Outcome outcome = compare(program);
  EXPECT_EQ(outcome.state.gpr[kRax], rax);
  EXPECT_EQ(outcome.state.gpr[kRbx], rbx);
  EXPECT_EQ(outcome.state.gpr[kRsi], rsi);
  EXPECT_EQ(outcome.state.gpr[kRdi], rdi);
  EXPECT_EQ(outcome.retired, 6 + 2000 * 7 + 1000 * 7 + 1);
  EXPECT_GT(outcome.patched_exits, 0u);
  // Budgets that end the run at every kind of boundary: a side exit, the back edge, the
  // taken block's end.
  for (uint64_t budget = 1000; budget < 1030; ++budget) {
    const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, budget);
    const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, budget);
    expect_same(interpreted, translated);
  }
}

TEST(JitSideExitTest, FlagsStayLiveAcrossASideExit) {
  // ADD sets CF and ZF; a Jcc on ZF leaves the block (a side exit) or goes on; both ways
  // then read CF: ADC and JC right after the Jcc (the producer known), and at the side
  // exit's target (a block of its own: the flags from CpuState). CMP before a JE likewise,
  // its CF read by ADC after the side exit, and DEC's kept carry.
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    Xbyak::Label loop, zero, equal, next, carry_on, carry_taken;
    c.mov(ecx, 64);
    c.mov(rbx, 0x8000000000000000ull);
    c.xor_(r8d, r8d);
    c.xor_(r9d, r9d);
    c.xor_(r10d, r10d);
    c.xor_(r11d, r11d);
    c.L(loop);
    c.mov(rax, rcx);
    c.shl(rax, 58);  // rax + rbx: CF and ZF vary with the round
    c.add(rax, rbx);
    c.jz(zero, CodeGenerator::T_NEAR);
    c.adc(r8, 0);  // CF of the ADD, not taken
    c.jc(carry_on);
    c.inc(r9);
    c.L(carry_on);
    c.cmp(ecx, 33);
    c.je(equal, CodeGenerator::T_NEAR);
    c.dec(r12);  // keeps the CMP's CF
    c.adc(r10, 0);
    c.jmp(next, CodeGenerator::T_NEAR);
    c.L(zero);
    c.adc(r11, 1);  // CF of the ADD, after the side exit
    c.jc(carry_taken);
    c.inc(r13);
    c.L(carry_taken);
    c.jmp(next, CodeGenerator::T_NEAR);
    c.L(equal);
    c.adc(r14, 5);  // CF of the CMP (clear: 33 == 33), after the side exit
    c.dec(r15);
    c.adc(r15, 0);  // DEC's kept carry, from the CMP
    c.L(next);
    c.pushf();
    c.pop(rdx);
    c.add(rsi, rdx);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.hlt();
  }));
  expect_no_exception(outcome);
  EXPECT_GT(outcome.state.gpr[kR11], 0u);  // the side exit was taken
  EXPECT_GT(outcome.state.gpr[kR10], 0u);
}

TEST(JitSideExitTest, APartialFlagWriterBeforeASideExitStoresTheFlagsTheJccDoesNotRead) {
  // ROL writes CF and OF only; the JZ after it reads the ZF of the ADD before, and the
  // fall-through overwrites every flag: only the side exit's target reads ROL's CF.
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    Xbyak::Label loop, taken, next;
    c.mov(ecx, 40);
    c.mov(rdx, 0x8000000000000001ull);
    c.L(loop);
    c.mov(rax, rcx);
    c.and_(eax, 3);
    c.add(rax, rbx);  // ZF when RCX is a multiple of 4 (RBX is 0)
    c.rol(rdx, 1);  // CF: the bit rotated out
    c.jz(taken, CodeGenerator::T_NEAR);
    c.xor_(esi, esi);
    c.jmp(next, CodeGenerator::T_NEAR);
    c.L(taken);
    c.adc(r8, 0);
    c.setc(al);
    c.movzx(eax, al);
    c.lea(r9, ptr[r9 * 2 + rax]);
    c.L(next);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.hlt();
  }));
  expect_no_exception(outcome);
  EXPECT_GT(outcome.state.gpr[kR8], 0u);
}

TEST(JitSideExitTest, ACalledConditionKeepsTheDirtyCallerSavedRegisters) {
  // ADC of memory is a handler: the Jcc's condition after it is left to a C call, which may
  // clobber the host's caller-saved registers, here holding dirty guest registers (eight
  // written: the cache's callee-saved slots are full).
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    Xbyak::Label loop, taken, next;
    c.mov(r15d, 30);
    c.mov(r14d, kData);
    c.mov(rax, 0x7000000000000000ull);
    c.L(loop);
    c.adc(qword[r14], rax);
    c.lea(rbx, ptr[r15 + 1]);
    c.lea(rcx, ptr[r15 * 2 + 3]);
    c.lea(rdx, ptr[rbx + rcx]);
    c.lea(rsi, ptr[rdx * 4 + 7]);
    c.lea(rdi, ptr[rsi + rbx]);
    c.lea(r8, ptr[rdi + rcx]);
    c.lea(r9, ptr[r8 + rdx]);
    c.lea(r10, ptr[r9 + rsi]);
    // Each condition through the C call (lamina_jit_condition), mostly not taken.
    c.jp(taken, CodeGenerator::T_NEAR);
    c.jo(taken, CodeGenerator::T_NEAR);
    c.jl(taken, CodeGenerator::T_NEAR);
    c.jc(taken, CodeGenerator::T_NEAR);
    for (const auto& reg : {rbx, rcx, rdx, rsi, rdi, r8, r9, r10}) c.add(qword[r14 + 8 * static_cast<int>(reg.getIdx())], reg);
    c.jmp(next, CodeGenerator::T_NEAR);
    c.L(taken);
    for (const auto& reg : {rbx, rcx, rdx, rsi, rdi, r8, r9, r10}) c.sub(qword[r14 + 8 * static_cast<int>(reg.getIdx())], reg);
    c.L(next);
    c.dec(r15d);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.hlt();
  }));
  expect_no_exception(outcome);
}

TEST(JitSideExitTest, ASideExitPastTheLastCanonicalPageRaisesGpWithTheRegisters) {
  // A JZ in the middle of a block at the top of the canonical range, taken to a
  // non-canonical address: #GP at the JZ, with the registers written before it (cached,
  // dirty) in CpuState.
  constexpr uint64_t kTop = 0x00007ffffffff000, kTopPhysical = 0x130000;
  uint64_t jz = 0;
  const std::vector<uint8_t> program = assemble([](CodeGenerator& c) {
    c.mov(rax, kTop + 0x800);
    c.jmp(rax);
  });
  const auto setup = [&jz](TestMachine& machine) {
    machine.map_page(kTop, kTopPhysical, false, true);
    machine.write(kTopPhysical + 0x800, assemble([&jz](CodeGenerator& c) {
      Xbyak::Label loop;
      c.mov(ecx, 20);
      c.L(loop);
      c.add(rbx, 2);
      c.lea(rsi, ptr[rbx + rcx * 4]);
      c.dec(ecx);
      c.jnz(loop, CodeGenerator::T_NEAR);
      c.lea(rdi, ptr[rsi + 5]);
      c.xor_(eax, eax);
      jz = kTop + 0x800 + c.getSize();
      const auto relative = static_cast<uint32_t>(kTop + 0x1010 - (jz + 6));
      c.db(0x0f), c.db(0x84);
      for (int shift = 0; shift < 32; shift += 8) c.db(static_cast<uint8_t>(relative >> shift));
      c.add(rdi, 1);
      c.hlt();
    }));
  };
  const Outcome translated = compare_with(program, setup);
  EXPECT_EQ(translated.state.rip, kHandler + 1);
  EXPECT_EQ(translated.stack_rip, jz);
  EXPECT_EQ(translated.state.gpr[kRdi], 40u + 4u + 5u);
  EXPECT_GT(translated.translations, 0u);
}

TEST(JitSideExitTest, DirtyRegistersReachTheSideExitsTarget) {
  // More registers written before the Jcc than host registers cache them (evictions), with
  // partial writes; the side exit's target stores them all, the fall-through changes them.
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    Xbyak::Label loop, taken, next;
    c.mov(ecx, 10);
    c.mov(r14d, kData);
    c.L(loop);
    c.lea(rax, ptr[rcx + 1]);
    c.lea(rbx, ptr[rcx * 2 + 3]);
    c.lea(rdx, ptr[rax + rbx]);
    c.lea(rsi, ptr[rdx * 4 + 7]);
    c.lea(rdi, ptr[rsi + rax]);
    c.mov(r8, rdi);
    c.add(r8, rbx);
    c.imul(r9, r8, 3);
    c.lea(r10, ptr[r9 + r8]);
    c.xor_(r11, r10);
    c.mov(ah, cl);
    c.add(r12w, cx);
    c.lea(r13, ptr[r12 + r11]);
    c.test(cl, 3);
    c.jz(taken, CodeGenerator::T_NEAR);  // rounds 8 and 4: the side exit
    c.xor_(eax, eax);
    c.xor_(ebx, ebx);
    c.xor_(edx, edx);
    c.xor_(esi, esi);
    c.xor_(r8d, r8d);
    c.xor_(r13d, r13d);
    c.jmp(next, CodeGenerator::T_NEAR);
    c.L(taken);
    for (const auto& reg : {rax, rbx, rdx, rsi, rdi, r8, r9, r10, r11, r12, r13}) {
      c.add(qword[r14 + 8 * static_cast<int>(reg.getIdx())], reg);
    }
    c.L(next);
    c.dec(ecx);
    c.jnz(loop, CodeGenerator::T_NEAR);
    c.hlt();
  }));
  expect_no_exception(outcome);
  // RAX's sums from rounds 8 and 4: (9 + 8 << 8) + (5 + 4 << 8).
  uint64_t rax = 0;
  for (const uint64_t round : {8u, 4u}) rax += (round + 1) | (round << 8);
  EXPECT_EQ(outcome.data[0] | uint64_t{outcome.data[1]} << 8, rax);
}

TEST(JitSideExitTest, APageFaultAfterANotTakenJccIsPrecise) {
  // The Jcc is not taken; the store after it in the same block faults: RIP pushed, CR2,
  // registers (cached, dirty) and the retired count as the interpreter's.
  std::vector<uint8_t> program;
  size_t store_offset = 0;
  program = assemble([&](CodeGenerator& c) {
    Xbyak::Label away;
    c.mov(eax, 5);
    c.add(eax, 7);
    c.mov(rbx, 0x1234);
    c.lea(rsi, ptr[rbx + rax]);
    c.cmp(eax, 12);
    c.jne(away, CodeGenerator::T_NEAR);
    c.add(rsi, 3);
    c.mov(rcx, 0x40000000);  // not mapped
    store_offset = c.getSize();
    c.mov(dword[rcx], eax);
    c.mov(eax, 99);
    c.hlt();
    c.L(away);
    c.mov(eax, 77);
    c.hlt();
  });
  const Outcome outcome = compare(program);
  EXPECT_EQ(outcome.state.cr2, 0x40000000u);
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
  EXPECT_EQ(outcome.stack_rip, kCode + store_offset);
  EXPECT_EQ(outcome.state.gpr[kRax], 12u);
  EXPECT_EQ(outcome.state.gpr[kRsi], 0x1234u + 12 + 3);
  // Eight instructions, the delivery (counted as one) and the handler's HLT.
  EXPECT_EQ(outcome.retired, 10u);
}

TEST(JitSideExitTest, SelfModifyingCodeRewritingTheFallThroughIsSeen) {
  // The MOV after a mid-block Jcc is rewritten each round, by a store in its own block (it
  // stops there) and by a called function (the block's translation is dropped).
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    Xbyak::Label outer, patched, writer, skip, after;
    c.mov(ecx, 20);
    c.xor_(ebx, ebx);
    c.L(outer);
    c.test(cl, 1);
    c.jz(skip);
    c.call(writer);
    c.L(skip);
    c.cmp(ecx, 7);
    c.je(after, CodeGenerator::T_NEAR);  // a side exit in round 7
    c.L(patched);
    c.mov(eax, 0x11111111);
    c.add(ebx, eax);
    c.L(after);
    c.mov(dword[rip + patched + 1], ecx);  // the next round's immediate, this block's code
    c.dec(ecx);
    c.jnz(outer, CodeGenerator::T_NEAR);
    c.hlt();
    c.L(writer);
    c.lea(edx, ptr[rcx + 100]);
    c.mov(dword[rip + patched + 1], edx);
    c.ret();
  }));
  // Round n (20..1) adds the immediate in place: 0x11111111 in round 20 (odd rounds are
  // rewritten by the writer to n + 100 first), round 7 adds nothing.
  uint64_t expected = 0;
  uint64_t immediate = 0x11111111;
  for (uint64_t round = 20; round >= 1; --round) {
    if (round & 1) immediate = round + 100;
    if (round != 7) expected = (expected + immediate) & 0xffffffff;
    immediate = round;
  }
  EXPECT_EQ(outcome.state.gpr[kRbx], expected);
}

TEST(JitSideExitTest, TheInterpreterEndsABlockWhereItsJccIsTaken) {
  // The interpreter alone: a block running on past a Jcc, taken in some rounds; with every
  // Jcc not taken it is one block.
  const std::vector<uint8_t> program = assemble([](CodeGenerator& c) {
    Xbyak::Label loop, odd;
    c.mov(ecx, 10);
    c.xor_(eax, eax);
    c.L(loop);
    c.test(cl, 1);
    c.jnz(odd);
    c.add(eax, 100);
    c.L(odd);
    c.add(eax, 1);
    c.dec(ecx);
    c.jnz(loop);
    c.hlt();
  });
  const Outcome outcome = run_on(CpuEngine::kInterpreter, program);
  EXPECT_EQ(outcome.state.gpr[kRax], 5u * 100u + 10u);
  EXPECT_EQ(outcome.state.rip, kCode + program.size());
  EXPECT_EQ(outcome.retired, 2u + 5u * 6u + 5u * 5u + 1u);

  // Straight code with two Jcc never taken: one block.
  CpuConfiguration configuration;
  configuration.engine = CpuEngine::kInterpreter;
  TestMachine machine(16 << 20, configuration);
  machine.enter_long_mode(0);
  machine.write(kCode, assemble([](CodeGenerator& c) {
    Xbyak::Label never;
    c.mov(eax, 1);
    c.cmp(eax, 2);
    c.je(never);
    c.add(eax, 2);
    c.jz(never);
    c.add(eax, 3);
    c.hlt();
    c.L(never);
    c.hlt();
  }));
  machine.state().rip = kCode;
  machine.state().halted = false;
  machine.cpu().run(1000);
  EXPECT_EQ(machine.state().gpr[kRax], 6u);
  EXPECT_EQ(machine.cpu().instructions_retired(), 7u);
  EXPECT_EQ(machine.cpu().cached_blocks(), 1u);
}

// A block runs on past at most two Jcc (the third ends it: longer blocks overlapped so much
// that the mixed workload's code outgrew the 64 MiB cache): straight code with four Jcc never
// taken is two blocks, on both engines.
TEST(JitSideExitTest, ABlockRunsOnPastAtMostTwoJcc) {
  for (const CpuEngine engine : {CpuEngine::kInterpreter, CpuEngine::kJit}) {
    CpuConfiguration configuration;
    configuration.engine = engine;
    TestMachine machine(16 << 20, configuration);
    machine.enter_long_mode(0);
    machine.write(kCode, assemble([](CodeGenerator& c) {
      Xbyak::Label never;
      c.mov(eax, 1);
      for (int i = 0; i < 4; ++i) {
        c.cmp(eax, 100);
        c.je(never);
        c.add(eax, 1);
      }
      c.hlt();
      c.L(never);
      c.hlt();
    }));
    machine.state().rip = kCode;
    machine.state().halted = false;
    machine.cpu().run(1000);
    EXPECT_EQ(machine.state().gpr[kRax], 5u);
    EXPECT_EQ(machine.cpu().instructions_retired(), 14u);
    EXPECT_EQ(machine.cpu().cached_blocks(), 2u);
  }
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
