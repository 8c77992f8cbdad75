// Flag liveness per status flag (translator_liveness.cc) against the interpreter: blocks that
// mix partial flag writers (ROL/ROR: CF and OF; INC/DEC: all but CF) with full ones, and the
// consumers of a few flags (ADC/SBB: CF, SETcc/CMOVcc, Jcc) or of all (PUSHF, a handler, a
// fault, the block's end). A flag store left out where some bit is still read shows as a
// different register, RFLAGS or stack word at the end.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <xbyak/xbyak.h>

#include "jit_test_program.h"
#include "random_forms.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

std::vector<uint8_t> random_program(uint64_t seed) {
  return assemble([seed](CodeGenerator& c) {
    std::mt19937_64 random(seed);
    c.mov(rsi, kData);
    c.xor_(r15d, r15d);
    for (const Xbyak::Reg64& reg : kWorking) c.mov(reg, random());
    for (int index = 0; index < 1200; ++index) random_form(c, static_cast<int>(random() % 37), random);
    for (const Xbyak::Reg64& reg : kWorking) c.add(r15, reg);
    fold_pushf(c);
    c.hlt();
  });
}

TEST(JitFlagLivenessTest, RandomMixesOfPartialAndFullFlagWritersMatchTheInterpreter) {
  for (const uint64_t seed : {uint64_t{3}, uint64_t{77}, uint64_t{20261207}, uint64_t{9001}}) {
    SCOPED_TRACE(seed);
    expect_no_exception(compare(random_program(seed)));
  }
}

// Each program: its operands chosen so that a flag the JIT dropped would read differently.
TEST(JitFlagLivenessTest, BitsAPartialWriterKeepsReachTheirReaders) {
  const std::function<void(CodeGenerator&)> programs[] = {
      // XOR's ZF, SF, PF survive the ROR (which writes CF and OF only): PUSHF sees them.
      [](CodeGenerator& c) {
        c.mov(eax, 0x80000000u);
        c.xor_(eax, 0x80000001u);  // ZF clear, SF clear, PF clear
        c.ror(ebx, 5);
        fold_pushf(c);
      },
      // The same, with the block's end after the ROR: the next block reads them.
      [](CodeGenerator& c) {
        c.mov(eax, 5);
        c.xor_(eax, 5);  // ZF set
        c.rol(rbx, 3);
        c.jmp("@f");
        c.L("@@");
        c.setz(dl);
        fold_pushf(c);
      },
      // ADD's CF survives INC (all but CF) into ADC.
      [](CodeGenerator& c) {
        c.mov(eax, 0xffffffffu);
        c.add(eax, 1);  // CF set
        c.inc(ebx);
        c.adc(edx, 0);
      },
      // SUB's CF survives DEC and a ROR's CF is overwritten by the SUB after it.
      [](CodeGenerator& c) {
        c.mov(ebx, 0x80000000u);
        c.ror(ebx, 31);  // CF set
        c.mov(eax, 1);
        c.sub(eax, 2);  // CF set, ZF clear
        c.dec(ecx);
        c.setb(dl);
        c.sbb(edi, edi);
      },
      // ROR's CF into ADC, with XOR's ZF read by CMOVZ after both.
      [](CodeGenerator& c) {
        c.mov(ebx, 1);
        c.xor_(eax, eax);  // ZF set, CF clear
        c.ror(ebx, 1);     // CF set
        c.mov(ecx, 7);
        c.cmovz(edx, ecx);
        c.adc(edi, 0);
      },
      // INC after a logic operation takes CF as clear; then a ROR sets it; INC keeps it.
      [](CodeGenerator& c) {
        c.mov(ebx, 3);
        c.and_(eax, eax);
        c.inc(ecx);
        c.ror(ebx, 1);  // CF set
        c.inc(ecx);
        fold_pushf(c);
      },
      // ROL by CL (maybe zero): stored by the handler, the flags before it kept.
      [](CodeGenerator& c) {
        c.mov(eax, 0);
        c.sub(eax, 1);  // CF, SF set
        c.xor_(ecx, ecx);
        c.mov(ecx, 0x20);  // a count of zero after masking
        c.rol(ebx, cl);
        c.ror(edx, 4);
        c.jmp("@f");
        c.L("@@");
        fold_pushf(c);
      },
  };
  for (size_t index = 0; index < std::size(programs); ++index) {
    SCOPED_TRACE(index);
    expect_no_exception(compare(assemble([&](CodeGenerator& c) {
      c.xor_(r15d, r15d);
      c.mov(rbx, 0x1234567890abcdefull);
      c.mov(rcx, 0);
      c.mov(rdx, 0);
      c.mov(rdi, 0);
      programs[index](c);
      fold_pushf(c);
      c.hlt();
    })));
  }
}

// A #PF in a memory form after an ALU operation and a partial writer: the flags the fault
// delivers (seen in RFLAGS at the handler) are the ALU operation's with the ROR's CF and OF.
TEST(JitFlagLivenessTest, APageFaultSeesTheFlagsOfEveryWriterBeforeIt) {
  for (int form = 0; form < 4; ++form) {
    SCOPED_TRACE(form);
    const Outcome outcome = compare(assemble([form](CodeGenerator& c) {
      c.mov(eax, 0x7fffffff);
      c.mov(rbx, 0x8000000000000000ull);
      c.mov(rcx, 0x40000000);  // not mapped
      c.add(eax, 1);           // OF, SF, AF set, ZF, CF clear
      c.rol(rbx, 1);           // CF set, OF set
      c.inc(edx);
      if (form == 1) c.dec(rdx);
      switch (form) {
        case 0: c.mov(edi, dword[rcx]); break;
        case 1: c.add(dword[rcx + 8], eax); break;
        case 2: c.cmp(qword[rcx], 3); break;
        default: c.mov(byte[rcx + 5], al); break;
      }
      c.xor_(eax, eax);  // would clear them, after the fault
      c.mov(eax, 99);
      c.hlt();
    }));
    EXPECT_EQ(outcome.state.cr2 & ~uint64_t{0xf}, 0x40000000u);
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
  }
}

// A Jcc right after the producer branches on the host flags it left: every condition after
// each producer kind, taken and not, with RIP advanced past instructions before it; for the
// ALU forms of memory also after their slow path (a page crossing: the handler), which sets
// the host flags again.
TEST(JitFlagLivenessTest, AJccRightAfterItsProducerTakesEveryConditionAsTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    c.xor_(r15d, r15d);
    c.mov(rsi, kData);
    const uint64_t values[] = {0, 0x80000000u, ~uint64_t{0}};
    for (const uint64_t a : values) {
      for (const uint64_t b : {uint64_t{1}, ~uint64_t{0}}) {
        for (int producer = 0; producer < 12; ++producer) {
          for (int code = 0; code < 16; ++code) {
            c.mov(rax, a);
            c.mov(rcx, b);
            if (producer >= 9) c.mov(qword[rsi + (producer == 9 ? 0xffc : 0)], rcx);
            c.stc();
            switch (producer) {
              case 0: c.cmp(eax, ecx); break;
              case 1: c.sub(al, cl); break;
              case 2: c.add(rax, rcx); break;
              case 3: c.test(eax, ecx); break;
              case 4: c.xor_(cx, ax); break;
              case 5: c.adc(eax, ecx); break;
              case 6: c.sbb(rax, rcx); break;
              case 7: c.dec(eax); break;
              case 8: c.neg(cl); break;
              case 9: c.cmp(eax, dword[rsi + 0xffe]); break;  // crosses into the next page
              case 10: c.cmp(qword[rsi], rax); break;
              default: c.sub(ax, word[rsi + 1]); break;
            }
            jump_over_add(c, code);
          }
        }
      }
    }
    fold_pushf(c);
    c.hlt();
  })));
}

}  // namespace
}  // namespace lamina::cpu::x86::testing

namespace lamina::cpu::x86::testing {
namespace {

// A condition read at the start of a block whose producer ran in the block before (`cmp; jb;
// ja` leaves the second Jcc a block of its own): the translator does not know the producer
// and computes the condition from the stored lazy flags (translator_flags.cc). Every
// producer kind that stores them (ADD, SUB/CMP, logic, INC/DEC with their kept carry, NEG,
// ADC/SBB, a shift's materialized flags), every size, operands at the edges, and all 16
// conditions as a Jcc, a SETcc and a CMOVcc.
TEST(JitFlagLivenessTest, ConditionsAtABlockStartMatchTheInterpreterForEveryProducer) {
  const uint64_t values[] = {0, 1, 0x7f, 0x80, 0xffff, 0x80000000, 0x7fffffffffffffff, ~uint64_t{0}};
  for (int producer = 0; producer < 10; ++producer) {
    SCOPED_TRACE(producer);
    const auto code = assemble([&](CodeGenerator& c) {
      Xbyak::Label round;
      c.xor_(r15d, r15d);
      // Two rounds: blocks are translated on their second run.
      c.mov(r14d, 2);
      c.L(round);
      for (uint64_t first : values) {
        for (int size : {1, 2, 4, 8}) {
          for (int condition = 0; condition < 16; ++condition) {
            Xbyak::Label next, taken, join;
            const uint64_t second = values[(first + static_cast<uint64_t>(condition)) % std::size(values)];
            c.mov(rax, first);
            c.mov(rbx, second);
            // CF set before INC/DEC, which keep it; ADC/SBB read it.
            if (condition & 1) {
              c.stc();
            } else {
              c.clc();
            }
            const Xbyak::Reg a = size == 1 ? Xbyak::Reg(al) : size == 2 ? Xbyak::Reg(ax) : size == 4 ? Xbyak::Reg(eax) : Xbyak::Reg(rax);
            const Xbyak::Reg b = size == 1 ? Xbyak::Reg(bl) : size == 2 ? Xbyak::Reg(bx) : size == 4 ? Xbyak::Reg(ebx) : Xbyak::Reg(rbx);
            switch (producer) {
              case 0: c.add(a, b); break;
              case 1: c.sub(a, b); break;
              case 2: c.cmp(a, b); break;
              case 3: c.and_(a, b); break;
              case 4: c.xor_(a, b); break;
              case 5: c.inc(a); break;
              case 6: c.dec(a); break;
              case 7: c.neg(a); break;
              case 8: c.adc(a, b); break;
              default: c.shl(a, 1); break;
            }
            c.jmp(next, CodeGenerator::T_NEAR);  // the block ends; the next one reads the flags
            c.L(next);
            switch (condition) {
              case 0x0: c.jo(taken, CodeGenerator::T_NEAR); break;
              case 0x1: c.jno(taken, CodeGenerator::T_NEAR); break;
              case 0x2: c.jb(taken, CodeGenerator::T_NEAR); break;
              case 0x3: c.jae(taken, CodeGenerator::T_NEAR); break;
              case 0x4: c.je(taken, CodeGenerator::T_NEAR); break;
              case 0x5: c.jne(taken, CodeGenerator::T_NEAR); break;
              case 0x6: c.jbe(taken, CodeGenerator::T_NEAR); break;
              case 0x7: c.ja(taken, CodeGenerator::T_NEAR); break;
              case 0x8: c.js(taken, CodeGenerator::T_NEAR); break;
              case 0x9: c.jns(taken, CodeGenerator::T_NEAR); break;
              case 0xa: c.jp(taken, CodeGenerator::T_NEAR); break;
              case 0xb: c.jnp(taken, CodeGenerator::T_NEAR); break;
              case 0xc: c.jl(taken, CodeGenerator::T_NEAR); break;
              case 0xd: c.jge(taken, CodeGenerator::T_NEAR); break;
              case 0xe: c.jle(taken, CodeGenerator::T_NEAR); break;
              default: c.jg(taken, CodeGenerator::T_NEAR); break;
            }
            c.add(r15, 1);
            c.jmp(join, CodeGenerator::T_NEAR);
            c.L(taken);
            // The taken way: a SETcc and a CMOVcc of the same flags at this block's start.
            setcc(c, condition, dl);
            c.movzx(edx, dl);
            c.lea(r15, ptr[r15 + rdx * 4 + 2]);
            cmovcc(c, condition ^ 1, ecx, eax);
            c.L(join);
            c.imul(r15, r15, 3);
          }
        }
      }
      c.dec(r14d);
      c.jnz(round, CodeGenerator::T_NEAR);
      c.hlt();
    });
    const Outcome translated = compare(code);
    expect_no_exception(translated);
  }
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
