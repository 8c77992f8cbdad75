// The forms the mixed workload's profile sent through handlers, now inline (translator_shift.cc's
// shifts by CL, of memory and SHLD/SHRD, translator_divide.cc, translator_atomic.cc, the scalar
// SSE moves): random operands and the edge counts on both engines, every flag read back by
// PUSHF and by Jcc, the flags seen and not seen by the next instruction, and the faults that
// must stay precise in the middle of a block (#DE, #PF, misaligned atomics).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/system/control_bits.h"
#include "jit_test_program.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// Counts at the edges of every operand width (masking, zero, the width itself) and random ones.
uint8_t pick_count(std::mt19937_64& random) {
  static constexpr uint8_t kEdges[] = {0,  1,  2,  7,  8,  9,  15, 16, 17,
                                       24, 31, 32, 33, 63, 64, 65, 255};
  if (random() % 3 != 0) return kEdges[random() % std::size(kEdges)];
  return static_cast<uint8_t>(random());
}

uint64_t pick_value(std::mt19937_64& random) {
  static constexpr uint64_t kEdges[] = {
      0, 1, 0x80, 0x8000, 0x80000000u, 0x8000000000000000ull, ~0ull, 0x7fffffffffffffffull};
  if (random() % 4 == 0) return kEdges[random() % std::size(kEdges)];
  return random();
}

// A Jcc of `condition` over an ADD to r15: r15 says whether it was taken.
void jump_over_add(CodeGenerator& c, int condition) {
  c.db(0x70 | condition);  // Jcc rel8 over the 4-byte ADD
  c.db(4);
  c.add(r15, condition + 1);
}

// The consumer tests' end: the flags (PUSHF), rdx and rbx folded into r15.
void fold_consumer_results(CodeGenerator& c) {
  c.pushfq();
  c.pop(r11);
  c.add(r15, r11);
  c.add(r15, rdx);
  c.add(r15, rbx);
  c.rol(r15, 11);
}

// After the form: the flags into r15 by PUSHF and by two Jcc (conditions chosen by `round`),
// or, with `overwrite`, a CMP first so that nothing sees the form's own flags.
void fold_flags(CodeGenerator& c, int round, bool overwrite) {
  if (overwrite) c.cmp(rax, rdx);
  for (const int condition : {round & 15, (round * 7 + 3) & 15}) jump_over_add(c, condition);
  c.pushfq();
  c.pop(r11);
  c.add(r15, r11);
  c.add(r15, rax);
  c.add(r15, rdx);
  c.add(r15, r9);
  c.add(r15, qword[rsi]);
  c.add(r15, qword[rsi + 8]);
  c.rol(r15, 9);
}

// One shift form (0-21) on rax/r9/rdx and the qwords at rsi..rsi+16, count in CL.
void shift_form(CodeGenerator& c, int form, uint8_t immediate) {
  switch (form) {
    case 0: c.shl(eax, cl); break;
    case 1: c.shr(rax, cl); break;
    case 2: c.sar(r9d, cl); break;
    case 3: c.shl(ax, cl); break;
    case 4: c.shr(al, cl); break;
    case 5: c.sar(ah, cl); break;
    case 6: c.shl(r9, cl); break;
    case 7: c.shl(dword[rsi + 4], cl); break;
    case 8: c.shr(qword[rsi], cl); break;
    case 9: c.sar(word[rsi + 6], cl); break;
    case 10: c.shl(byte[rsi + 9], cl); break;
    case 11: c.shl(byte[rsi + 3], 1); break;
    case 12: c.sar(dword[rsi + 8], 1); break;
    case 13: c.shr(qword[rsi + 8], immediate); break;
    case 14: c.shl(word[rsi + 2], immediate); break;
    case 15: c.shld(rax, rdx, cl); break;
    case 16: c.shrd(eax, edx, cl); break;
    case 17: c.shld(r9d, eax, immediate); break;
    case 18: c.shrd(qword[rsi + 8], rdx, cl); break;
    case 19: c.shld(dword[rsi + 4], edx, immediate); break;
    case 20: c.sar(qword[rsi], cl); break;
    default: c.shr(r9w, cl); break;
  }
}

std::vector<uint8_t> shift_program(uint64_t seed) {
  return assemble([seed](CodeGenerator& c) {
    std::mt19937_64 random(seed);
    c.mov(rsi, kData);
    c.mov(r15, 0);
    for (int round = 0; round < 360; ++round) {
      c.mov(rax, pick_value(random));
      c.mov(rdx, pick_value(random));
      c.mov(r9, pick_value(random));
      c.mov(rcx, pick_value(random));
      c.mov(qword[rsi], rcx);
      c.mov(rcx, pick_value(random));
      c.mov(qword[rsi + 8], rcx);
      c.mov(ecx, pick_count(random));
      // Flags before the form, which a count of zero must leave as they are.
      c.add(rdx, rax);
      shift_form(c, round % 22, static_cast<uint8_t>(pick_count(random) | 1));
      fold_flags(c, round, round % 5 == 4);
    }
    c.hlt();
  });
}

TEST(JitInlineFormsTest, ShiftsByClOfMemoryAndDoubleShiftsMatchTheInterpreter) {
  for (const uint64_t seed : {uint64_t{1}, uint64_t{42}, uint64_t{20261207}}) {
    SCOPED_TRACE(seed);
    expect_no_exception(compare(shift_program(seed)));
  }
}

TEST(JitInlineFormsTest, DividesMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    std::mt19937_64 random(7);
    c.mov(rsi, kData);
    c.mov(r15, 0);
    for (int round = 0; round < 400; ++round) {
      // Divisors of every magnitude (odd: never zero in any width), dividends that fit.
      const uint64_t divisor = (random() >> (random() % 64)) | 1;
      const uint64_t dividend = random();
      c.mov(r9, divisor);
      c.mov(qword[rsi + 8], r9);
      c.mov(rax, dividend);
      switch (round % 6) {
        case 0:
          c.xor_(edx, edx);
          c.div(r9);
          break;
        case 1:
          c.mov(edx, static_cast<uint32_t>(dividend >> 40) % static_cast<uint32_t>(divisor));
          c.div(r9d);
          break;
        case 2:
          c.cqo();
          c.idiv(r9);
          break;
        case 3:
          c.cdq();
          c.idiv(dword[rsi + 8]);
          break;
        case 4:
          c.mov(rdx, (dividend >> 3) % divisor);
          c.div(qword[rsi + 8]);
          break;
        default:
          // A dividend that is not its low half sign-extended (the handler's path), that fits.
          c.mov(r9d, 0x10001 | static_cast<uint32_t>(divisor & 0x3fff0000));
          c.mov(edx, 1);
          c.idiv(r9d);
          break;
      }
      fold_flags(c, round, false);
    }
    c.hlt();
  })));
}

// A #DE (no error code) from `divide`, after `before`, in the middle of a block, with the
// flags of the ADD before them kept.
void expect_divide_error(const std::function<void(CodeGenerator&)>& before,
                         const std::function<void(CodeGenerator&)>& divide) {
  uint64_t faulting = 0;
  const Outcome outcome = compare(assemble([&](CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r8, 0x7fffffffffffffffull);
    c.add(r8, 1);
    before(c);
    faulting = kCode + c.getSize();
    divide(c);
    c.mov(ebx, 0x1234);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.rip, kHandler + 1) << "no exception";
  EXPECT_EQ(outcome.stack_word, faulting);
  EXPECT_NE(outcome.state.gpr[kRbx], 0x1234u);
}

TEST(JitInlineFormsTest, DivideErrorsArePrecise) {
  const auto div_r9 = [](CodeGenerator& c) { c.div(r9); };
  expect_divide_error(
      [](CodeGenerator& c) {
        c.xor_(r9d, r9d);
        c.mov(eax, 5);
        c.xor_(edx, edx);
      },
      div_r9);
  expect_divide_error([](CodeGenerator& c) { c.mov(qword[rsi], 0); },
                      [](CodeGenerator& c) { c.div(dword[rsi]); });
  // The quotient does not fit: RDX >= the divisor.
  expect_divide_error(
      [](CodeGenerator& c) {
        c.mov(r9, 5);
        c.mov(rdx, 5);
      },
      div_r9);
  // IDIV's one overflow with a sign-extended dividend: the minimum by -1.
  expect_divide_error(
      [](CodeGenerator& c) {
        c.mov(rax, 0x8000000000000000ull);
        c.cqo();
        c.mov(r9, -1);
      },
      [](CodeGenerator& c) { c.idiv(r9); });
  expect_divide_error(
      [](CodeGenerator& c) {
        c.mov(eax, 0x80000000u);
        c.cdq();
        c.mov(qword[rsi], -1);
      },
      [](CodeGenerator& c) { c.idiv(dword[rsi]); });
  // A dividend that is not sign-extended whose quotient does not fit.
  expect_divide_error(
      [](CodeGenerator& c) {
        c.mov(eax, 0);
        c.mov(edx, 0x40000000);
        c.mov(r9d, 2);
      },
      [](CodeGenerator& c) { c.idiv(r9d); });
}

TEST(JitInlineFormsTest, ExchangesCompareExchangesAndExchangeAddsMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    std::mt19937_64 random(11);
    c.mov(rsi, kData);
    c.mov(r15, 0);
    for (int round = 0; round < 400; ++round) {
      const uint64_t memory = pick_value(random);
      c.mov(rcx, memory);
      c.mov(qword[rsi], rcx);
      c.mov(qword[rsi + 8], rcx);
      // The accumulator equal to memory (in some width) half of the time.
      c.mov(rax, round % 2 == 0 ? memory : pick_value(random));
      c.mov(rdx, pick_value(random));
      c.mov(r9, pick_value(random));
      switch (round % 14) {
        case 0:
          c.lock();
          c.cmpxchg(dword[rsi], edx);
          break;
        case 1: c.cmpxchg(qword[rsi], rdx); break;
        case 2:
          c.lock();
          c.cmpxchg(word[rsi + 8], r9w);
          break;
        case 3: c.cmpxchg(byte[rsi + 8], dh); break;
        case 4: c.xchg(dword[rsi], edx); break;
        case 5: c.xchg(qword[rsi + 8], r9); break;
        case 6: c.xchg(byte[rsi + 1], ah); break;
        case 7:
          c.lock();
          c.xadd(dword[rsi + 4], edx);
          break;
        case 8: c.xadd(qword[rsi], r9); break;
        case 9:
          c.lock();
          c.xadd(byte[rsi + 3], al);
          break;
        case 10:
          c.lock();
          c.cmpxchg(dword[rsi + 2], edx);
          break;                                      // misaligned: the handler
        case 11: c.xchg(qword[rsi + 4], rdx); break;  // misaligned
        case 12:
          c.lock();
          c.xadd(word[rsi + 7], r9w);
          break;  // misaligned
        default:
          c.lock();
          c.cmpxchg(qword[rsi + 8], rax);
          break;  // source = accumulator
      }
      fold_flags(c, round, round % 7 == 6);
    }
    c.hlt();
  })));
}

TEST(JitInlineFormsTest, ScalarSseMovesMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    std::mt19937_64 random(5);
    c.mov(rsi, kData);
    for (int slot = 0; slot < 64; ++slot) {
      c.mov(rax, random());
      c.mov(qword[rsi + 8 * slot], rax);
    }
    for (int index = 0; index < 16; ++index)
      c.movdqu(Xbyak::Xmm(index), ptr[rsi + 16 * (index % 8)]);
    c.movss(xmm0, ptr[rsi + 0x13]);
    c.movsd(xmm1, ptr[rsi + 0x25]);
    c.movss(xmm2, xmm3);
    c.movsd(xmm4, xmm5);
    c.movss(ptr[rsi + 0x101], xmm6);
    c.movsd(ptr[rsi + 0x109], xmm7);
    c.db(0xf3), c.db(0x45), c.db(0x0f), c.db(0x11), c.db(0xc1);  // movss xmm9, xmm8 (0F 11 form)
    c.db(0xf2), c.db(0x45), c.db(0x0f), c.db(0x11), c.db(0xd3);  // movsd xmm11, xmm10 (0F 11 form)
    c.movsd(xmm12, ptr[rsi + 0x101]);
    c.movss(xmm13, ptr[rsi + 0x109]);
    c.hlt();
  })));
}

// The flags of every kind of inlined producer read by the forms that take them from the
// translator's knowledge of the producer rather than a C call: ROL/ROR and BT/BSF (all six
// flags before them), ADC/SBB and INC/DEC (CF), Jcc and SETcc (materialized flags).
TEST(JitInlineFormsTest, KnownFlagProducersFeedTheirConsumers) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r15, 0);
    const uint64_t values[] = {0, 0x7f, 0x80000000, 0xffffffffffffff80ull};
    for (uint64_t a : values) {
      for (uint64_t b : {uint64_t{1}, uint64_t{0x81}, ~uint64_t{0}}) {
        for (int producer = 0; producer < 14; ++producer) {
          for (int consumer = 0; consumer < 8; ++consumer) {
            c.mov(rax, a);
            c.mov(rcx, b);
            c.mov(rdx, a ^ b);
            switch (producer) {
              case 0: c.add(eax, ecx); break;
              case 1: c.sub(rax, rcx); break;
              case 2:
                c.stc();
                c.adc(al, cl);
                break;
              case 3:
                c.stc();
                c.sbb(rax, rcx);
                break;
              case 4: c.and_(eax, ecx); break;
              case 5: c.xor_(ax, cx); break;
              case 6: c.inc(rax); break;
              case 7: c.dec(cl); break;
              case 8: c.shl(eax, 5); break;
              case 9: c.imul(rax, rcx); break;
              case 10: c.ror(rax, 3); break;
              case 11: c.bsr(rdx, rcx); break;
              case 12: c.shr(rax, cl); break;
              default: c.neg(rcx); break;
            }
            switch (consumer) {
              case 0: c.rol(edx, 7); break;
              case 1: c.bt(rax, 3); break;
              case 2: c.bsf(rdx, rax); break;
              case 3: c.adc(rdx, rcx); break;
              case 4: c.inc(edx); break;
              case 5: c.dec(qword[rsi]); break;
              case 6: c.sbb(dl, 1); break;
              default: break;  // the Jcc below reads the producer's own flags
            }
            const int condition = (producer + consumer * 3) & 15;
            jump_over_add(c, condition);
            c.db(0x0f), c.db(static_cast<uint8_t>(0x90 | ((condition + 5) & 15))),
                c.db(0xc3);  // SETcc bl
            fold_consumer_results(c);
          }
        }
      }
    }
    c.mov(rax, qword[rsi]);
    c.hlt();
  })));
}

// BSF/BSR from memory and BT/BTS/BTR/BTC of memory by an immediate (every bit offset the
// immediate can give, masked to the operand), their flags read and not read.
TEST(JitInlineFormsTest, BitFormsOfMemoryMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    std::mt19937_64 random(17);
    c.mov(rsi, kData);
    c.mov(r15, 0);
    for (int round = 0; round < 300; ++round) {
      c.mov(rax, round % 7 == 0 ? 0 : pick_value(random));
      c.mov(qword[rsi], rax);
      c.mov(rax, pick_value(random));
      c.mov(qword[rsi + 8], rax);
      c.mov(rdx, pick_value(random));
      c.mov(r9, pick_value(random));
      c.sub(rdx, r9);  // flags the forms keep in part
      const auto bit = static_cast<uint8_t>(random());
      switch (round % 9) {
        case 0: c.bsr(rdx, qword[rsi]); break;
        case 1: c.bsf(edx, dword[rsi + 4]); break;
        case 2: c.bsr(dx, word[rsi + 2]); break;
        case 3: c.bt(qword[rsi + 8], bit); break;
        case 4: c.bts(dword[rsi], bit); break;
        case 5: c.btr(qword[rsi], bit); break;
        case 6: c.btc(word[rsi + 6], bit); break;
        case 7:
          c.btr(qword[rsi + 8], bit);
          c.bsf(r9, qword[rsi + 8]);
          break;
        default:
          c.bsr(rax, qword[rsi]);
          c.add(rdx, rax);
          break;  // flags overwritten
      }
      fold_flags(c, round, round % 4 == 3);
    }
    c.hlt();
  })));
}

// PUSH imm8/imm32 (sign-extended), PUSH r/m64 (FF /6), LEAVE and MOV r, Sreg.
TEST(JitInlineFormsTest, StackFormsMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    std::mt19937_64 random(23);
    c.mov(rsi, kData);
    c.mov(r15, 0);
    // ES and FS get another selector than the others (the DPL 3 data segment, 0x23).
    c.mov(eax, 0x23);
    c.mov(es, eax);
    c.mov(fs, eax);
    for (int round = 0; round < 100; ++round) {
      c.mov(rax, pick_value(random));
      c.mov(qword[rsi + 8 * (round % 16)], rax);
      c.push(rbp);
      c.mov(rbp, rsp);
      c.push(static_cast<int8_t>(round - 50));                    // 6A
      c.push(static_cast<int32_t>(0x80000000u >> (round % 32)));  // 68
      c.push(qword[rsi + 8 * (round % 16)]);                      // FF /6 m64
      c.db(0xff), c.db(0xf0 | (round % 8 == 4 ? 0 : round % 8));  // FF /6 r64 (not RSP)
      c.mov(rdx, rsp);
      c.sub(rdx, rbp);
      c.add(r15, rdx);
      for (int popped = 0; popped < 4; ++popped) {
        c.pop(rdx);
        c.add(r15, rdx);
        c.rol(r15, 1);
      }
      c.mov(eax, round % 2 == 0 ? ds : es);                        // 8C r32
      c.db(0x66), c.db(0x8c), c.db(0xe1);                          // mov cx, fs
      c.db(0x48), c.db(0x8c), c.db(round % 2 == 0 ? 0xea : 0xca);  // mov rdx, gs / cs
      c.add(r15, rax);
      c.add(r15, rcx);
      c.add(r15, rdx);
      c.leave();
      c.rol(r15, 7);
    }
    c.hlt();
  })));
}

// RDTSC (the test machine's clock advances by 1000 a read: both engines read it as often),
// CLI and PUSHF after every kind of flag producer, and SETcc to memory.
TEST(JitInlineFormsTest, SystemFormsMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r15, 0);
    // IA32_TIME_STAMP_COUNTER set past 32 bits, so EDX and EAX both carry bits.
    c.mov(ecx, 0x10);
    c.mov(eax, 0xfffff000u);
    c.mov(edx, 0x1234);
    c.wrmsr();
    for (int round = 0; round < 64; ++round) {
      c.rdtsc();
      c.shl(rdx, 32);
      c.xor_(rax, rdx);  // RAX's upper half must be clear
      c.add(r15, rax);
      if (round % 4 == 0) c.sti();
      c.mov(rax, 0x8000000000000000ull >> round);
      c.mov(rcx, round * 0x1234567ull);
      switch (round % 6) {
        case 0: c.add(rax, rcx); break;
        case 1: c.shl(rax, 3); break;
        case 2: c.and_(eax, ecx); break;
        case 3: c.dec(rcx); break;
        case 4: c.bsf(rdx, rcx); break;
        default: c.sbb(rax, rcx); break;
      }
      if (round % 3 == 0) c.cli();
      c.pushfq();
      c.db(0x0f), c.db(static_cast<uint8_t>(0x90 | (round & 15))), c.db(0x46),
          c.db(static_cast<uint8_t>(round));  // setcc [rsi + round]
      c.pop(r11);
      c.add(r15, r11);
      c.rol(r15, 3);
    }
    c.hlt();
  })));
}

// At CPL 3 with IOPL 0 and CR4.TSD: RDTSC and CLI raise #GP(0) at themselves.
TEST(JitInlineFormsTest, PrivilegedSystemFormsFaultAtCplThree) {
  for (const bool time_stamp : {true, false}) {
    SCOPED_TRACE(time_stamp);
    uint64_t faulting = 0;
    const std::vector<uint8_t> program = assemble([&](CodeGenerator& c) {
      c.mov(eax, 5);
      c.add(eax, 7);
      c.pushfq();  // inline at CPL 3 too
      c.pop(r11);
      faulting = kCode + c.getSize();
      if (time_stamp) {
        c.rdtsc();
      } else {
        c.cli();
      }
      c.mov(ebx, 0x1234);
      c.hlt();
    });
    const auto user_mode = [](TestMachine& machine) {
      machine.enter_long_mode(3);
      for (uint8_t vector = 0; vector < 32; ++vector) machine.set_long_gate(vector, kHandler);
      machine.write64(TestMachine::kTss + 4, kStackTop - 0x1000);  // RSP0
      machine.state().cr4 |= cr4::kTsd;
      machine.cpu().state_changed();
    };
    const Outcome interpreted =
        run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, user_mode);
    const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 10'000'000, user_mode);
    expect_same(interpreted, translated);
    EXPECT_EQ(translated.state.rip, kHandler + 1) << "no exception";
    EXPECT_EQ(translated.stack_rip, faulting);
    EXPECT_NE(translated.state.gpr[kRbx], 0x1234u);
    EXPECT_EQ(translated.state.gpr[kR11] & 0x8d5, 0x4u);  // PUSHF saw ADD's flags: PF only
  }
}

// The same consumers at the start of a block, where the translator does not know the producer
// (the block before ended in a JMP): the flags are read inline when stored materialized, else
// through runtime.h; both must give the interpreter's answer.
TEST(JitInlineFormsTest, ConsumersAtABlockStartReadTheFlagsOfTheBlockBefore) {
  expect_no_exception(compare(assemble([](CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r15, 0);
    const uint64_t values[] = {0, 0x80000000, 0xffffffffffffff80ull};
    for (uint64_t a : values) {
      for (uint64_t b : {uint64_t{1}, ~uint64_t{0}}) {
        for (int producer = 0; producer < 12; ++producer) {
          for (int consumer = 0; consumer < 9; ++consumer) {
            c.mov(rax, a);
            c.mov(rcx, b);
            c.mov(rdx, a ^ b);
            switch (producer) {
              case 0: c.shl(eax, 5); break;
              case 1: c.imul(rax, rcx); break;
              case 2: c.ror(rax, 3); break;
              case 3: c.bsf(rdx, rcx); break;
              case 4: c.shr(rax, cl); break;
              case 5:
                c.movq(xmm0, rax);
                c.movq(xmm1, rcx);
                c.ucomisd(xmm0, xmm1);
                break;
              case 6: c.add(eax, ecx); break;
              case 7: c.sub(rax, rcx); break;
              case 8: c.and_(eax, ecx); break;
              case 9: c.sub(ax, cx); break;
              case 10: c.add(cl, al); break;
              default: c.inc(cl); break;
            }
            Xbyak::Label next;
            c.jmp(next);  // the consumer starts a block of its own
            c.L(next);
            const int condition = (producer * 5 + consumer) & 15;
            switch (consumer) {
              case 0:
                c.db(0x0f), c.db(static_cast<uint8_t>(0x90 | condition)), c.db(0xc3);
                break;  // SETcc bl
              case 1:
                c.db(0x48), c.db(0x0f), c.db(static_cast<uint8_t>(0x40 | condition)), c.db(0xd1);
                break;  // CMOVcc rdx, rcx
              case 2: c.rol(edx, 7); break;
              case 3: c.bt(rax, 3); break;
              case 4: c.adc(rdx, rcx); break;
              case 5: c.inc(edx); break;
              case 6: c.sbb(dl, 1); break;
              case 7: c.dec(qword[rsi]); break;
              default: break;  // the Jcc below reads the producer's flags
            }
            jump_over_add(c, condition);
            fold_consumer_results(c);
          }
        }
      }
    }
    c.mov(rax, qword[rsi]);
    c.hlt();
  })));
}

// Operands for the floating-point forms: zeros, denormals, infinities, quiet and signalling
// NaNs, values that round, and random bits, as doubles and as pairs of singles.
uint64_t pick_float_bits(std::mt19937_64& random) {
  static constexpr uint64_t kEdges[] = {0,
                                        0x8000000000000000ull,
                                        0x0000000000000001ull,
                                        0x000fffffffffffffull,
                                        0x7ff0000000000000ull,
                                        0xfff0000000000000ull,
                                        0x7ff8000000000000ull,
                                        0x7ff0000000000001ull,
                                        0x3ff0000000000000ull,
                                        0x3fb999999999999aull,
                                        0x0000000100000001ull,
                                        0x7f8000007fc00000ull,
                                        0x7f80000100400000ull,
                                        0x3f8000003dcccccdull,
                                        0xc1e0000000000000ull,
                                        0x43e0000000000000ull};
  if (random() % 3 == 0) return kEdges[random() % std::size(kEdges)];
  // Random signs and mantissas with exponents near 1.0 (double and single lanes alike).
  return (random() & 0x800fffff807fffffull) | 0x3fe000003f000000ull;
}

// SSE arithmetic, compares, (U)COMIS and CVTSI2SS/SD under several MXCSR settings, every one
// masking all exceptions: the JIT's host instruction against the SIMD unit.
void float_body(CodeGenerator& c, int round) {
  switch (round % 12) {
    case 0:
      c.addsd(xmm0, xmm1);
      c.mulsd(xmm2, ptr[rsi + 0x18]);
      c.subss(xmm3, xmm4);
      break;
    case 1:
      c.addss(xmm5, ptr[rsi + 0x24]);
      c.mulss(xmm6, xmm7);
      c.divsd(xmm8, xmm9);
      break;
    case 2:
      c.minsd(xmm10, xmm11);
      c.maxss(xmm12, ptr[rsi + 0x30]);
      c.sqrtsd(xmm13, xmm14);
      break;
    case 3:
      c.addps(xmm0, ptr[rsi + 0x40]);
      c.mulpd(xmm1, xmm2);
      c.subpd(xmm3, ptr[rsi + 0x50]);
      break;
    case 4:
      c.divps(xmm4, xmm5);
      c.minpd(xmm6, xmm7);
      c.maxps(xmm8, xmm9);
      c.sqrtps(xmm10, xmm11);
      break;
    case 5:
      c.rsqrtss(xmm12, xmm13);
      c.rcpps(xmm14, xmm15);
      c.sqrtss(xmm15, ptr[rsi + 0x2c]);
      break;
    case 6:
      c.cmpsd(xmm0, xmm1, round & 7);
      c.cmpps(xmm2, ptr[rsi + 0x60], (round >> 3) & 7);
      break;
    case 7:
      c.cmpss(xmm3, ptr[rsi + 0x14], round & 7);
      c.cmppd(xmm4, xmm5, 3);
      break;
    case 8:
      c.cvtsi2sd(xmm6, rax);
      c.cvtsi2ss(xmm7, ecx);
      c.cvtsi2sd(xmm8, dword[rsi + 0x10]);
      break;
    case 9:
      c.cvtsi2ss(xmm9, qword[rsi + 0x20]);
      c.cvtsi2ss(xmm10, rdx);
      c.subsd(xmm10, ptr[rsi + 0x28]);
      break;
    case 10: c.comisd(xmm0, xmm1); break;
    default: c.ucomiss(xmm2, ptr[rsi + 0x34]); break;
  }
  if (round % 12 >= 10 || round % 5 == 0) {
    switch (round % 4) {
      case 0: c.ucomisd(xmm3, xmm4); break;
      case 1: c.comiss(xmm5, ptr[rsi + 0x1c]); break;
      case 2: c.ucomisd(xmm6, ptr[rsi + 0x38]); break;
      default: c.comisd(xmm7, xmm8); break;
    }
  }
}

TEST(JitInlineFormsTest, SseFloatFormsMatchTheSimdUnit) {
  // Round to nearest, down, up, toward zero, then FTZ, DAZ, both; all exceptions masked.
  static constexpr uint32_t kMxcsr[] = {0x1f80, 0x3f80, 0x5f80, 0x7f80, 0x9f80, 0x1fc0, 0xffc0};
  constexpr uint32_t kInput = 0x800, kScratch = 0x7f0, kRounds = 24;
  for (const uint64_t seed : {uint64_t{3}, uint64_t{99}}) {
    for (const uint32_t mxcsr : kMxcsr) {
      SCOPED_TRACE(::testing::Message() << "seed " << seed << " mxcsr " << std::hex << mxcsr);
      std::mt19937_64 random(seed ^ mxcsr);
      std::vector<uint8_t> data(kDataBytes);
      for (uint32_t offset = 0; offset < kInput; offset += 8) {
        const uint64_t bits = pick_float_bits(random);
        for (int byte = 0; byte < 8; ++byte)
          data[offset + byte] = static_cast<uint8_t>(bits >> (8 * byte));
      }
      const std::vector<uint8_t> program = assemble([&](CodeGenerator& c) {
        c.mov(rdi, kData);
        c.mov(r15, 0);
        c.mov(dword[rdi + kScratch], mxcsr);
        c.ldmxcsr(dword[rdi + kScratch]);
        for (uint32_t round = 0; round < kRounds; ++round) {
          c.lea(rsi, ptr[rdi + (round * 0x50) % 0x700]);  // 16-byte aligned: packed operands
          for (int index = 0; index < 16; ++index)
            c.movdqu(Xbyak::Xmm(index), ptr[rsi + 8 * index]);
          c.mov(rax, pick_value(random));
          c.mov(rcx, pick_value(random));
          c.mov(rdx, pick_value(random));
          c.add(rdx, rcx);  // flags a COMIS replaces
          float_body(c, static_cast<int>(round + seed));
          // A Jcc and SETcc reading the flags (a COMIS's, when one came last), then PUSHF.
          c.db(0x70 | (round & 15));  // Jcc over the 4-byte ADD
          c.db(4);
          c.add(r15, 1);
          c.db(0x0f), c.db(static_cast<uint8_t>(0x90 | ((round + 7) & 15))),
              c.db(0xc3);  // SETcc bl
          c.pushfq();
          c.pop(r11);
          c.add(r15, r11);
          c.add(r15, rbx);
          // MXCSR's flags are sticky: read after every round.
          c.stmxcsr(dword[rdi + kScratch + 4]);
          c.add(r15d, dword[rdi + kScratch + 4]);
          c.rol(r15, 5);
          for (int index = 0; index < 16; ++index)
            c.movdqu(ptr[rdi + kInput + 0x100 * round + 16 * index], Xbyak::Xmm(index));
        }
        c.hlt();
      });
      const auto setup = [&data](TestMachine& machine) { machine.write(kData, data); };
      const Outcome interpreted =
          run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, setup);
      const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 10'000'000, setup);
      expect_same(interpreted, translated);
      expect_no_exception(translated);
    }
  }
}

// An unmasked exception in the guest's MXCSR: the SIMD unit raises #XM (CR4.OSXMMEXCPT) at
// the instruction, not the host.
TEST(JitInlineFormsTest, AnUnmaskedSseExceptionIsTheSimdUnits) {
  uint64_t faulting = 0;
  const Outcome outcome = compare(assemble([&](CodeGenerator& c) {
                                    c.mov(rsi, kData);
                                    c.mov(rax, 0x3ff0000000000000ull);  // 1.0
                                    c.movq(xmm0, rax);
                                    c.mov(rax, 0x4008000000000000ull);  // 3.0
                                    c.movq(xmm1, rax);
                                    c.addsd(xmm0, xmm1);        // exact, masked: inline
                                    c.mov(dword[rsi], 0x0f80);  // precision unmasked
                                    c.ldmxcsr(dword[rsi]);
                                    c.addsd(xmm0, xmm1);  // exact: no exception
                                    faulting = kCode + c.getSize();
                                    c.divsd(xmm0, xmm1);  // 7/3 is inexact: #XM
                                    c.mov(ebx, 0x1234);
                                    c.hlt();
                                  }),
                                  1 << 20);
  EXPECT_EQ(outcome.state.rip, kHandler + 1) << "no exception";
  EXPECT_EQ(outcome.stack_word, faulting);
  EXPECT_NE(outcome.state.gpr[kRbx], 0x1234u);
}

// `instruction` after a warm TLB for the data page raises #PF at an unmapped page; the flags
// of the ADD before it and every register are the interpreter's.
void expect_page_fault(const char* name, const std::function<void(CodeGenerator&)>& instruction,
                       const std::function<void(CodeGenerator&)>& before = {}) {
  SCOPED_TRACE(name);
  uint64_t faulting = 0;
  const Outcome outcome = compare(assemble([&](CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(eax, ptr[rsi]);
    c.mov(ptr[rsi + 0x800], eax);
    c.mov(rdi, 0x40000000);  // not mapped
    c.mov(ecx, 3);
    c.mov(r8, 0x7fffffffffffffffull);
    c.add(r8, 1);
    if (before) before(c);
    faulting = kCode + c.getSize();
    instruction(c);
    c.mov(ebx, 0x1234);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.rip, kHandler + 1) << "no exception";
  EXPECT_EQ(outcome.stack_rip, faulting);
  EXPECT_EQ(outcome.state.cr2 & ~uint64_t{0xfff}, 0x40000000u);
}

TEST(JitInlineFormsTest, PageFaultsOfInlinedMemoryFormsArePrecise) {
  expect_page_fault("shl m32, cl", [](CodeGenerator& c) { c.shl(dword[rdi + 4], cl); });
  expect_page_fault("shr m8, 1", [](CodeGenerator& c) { c.shr(byte[rdi], 1); });
  expect_page_fault("shrd m64, r64, cl", [](CodeGenerator& c) { c.shrd(qword[rdi], rdx, cl); });
  expect_page_fault("div m64", [](CodeGenerator& c) { c.div(qword[rdi + 8]); });
  expect_page_fault("lock cmpxchg m32", [](CodeGenerator& c) {
    c.lock();
    c.cmpxchg(dword[rdi], edx);
  });
  expect_page_fault("xchg m64", [](CodeGenerator& c) { c.xchg(qword[rdi], rdx); });
  expect_page_fault("xadd m32", [](CodeGenerator& c) { c.xadd(dword[rdi + 12], edx); });
  expect_page_fault("movss load", [](CodeGenerator& c) { c.movss(xmm3, ptr[rdi]); });
  expect_page_fault("movsd store", [](CodeGenerator& c) { c.movsd(ptr[rdi + 16], xmm3); });
  // A count of zero still accesses the operand.
  expect_page_fault("bsr m64", [](CodeGenerator& c) { c.bsr(rax, qword[rdi]); });
  expect_page_fault("btr m64, imm", [](CodeGenerator& c) { c.btr(qword[rdi], 40); });
  expect_page_fault("setne m8", [](CodeGenerator& c) { c.setne(byte[rdi + 5]); });
  expect_page_fault(
      "sar m16, cl=0", [](CodeGenerator& c) { c.sar(word[rdi], cl); },
      [](CodeGenerator& c) { c.mov(ecx, 0x40); });
  expect_page_fault("push m64", [](CodeGenerator& c) { c.push(qword[rdi + 8]); });
  expect_page_fault(
      "leave", [](CodeGenerator& c) { c.leave(); }, [](CodeGenerator& c) { c.mov(rbp, rdi); });
  // PUSHF onto an unmapped stack: the #PF cannot be delivered either (a triple fault), the same
  // on both engines. (Below the test machine's 16 MiB, where run_on reads the stack.)
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    c.mov(rsp, 0x900000);
    c.add(eax, 1);
    c.pushfq();
    c.mov(ebx, 0x1234);
    c.hlt();
  }));
  EXPECT_NE(outcome.state.gpr[kRbx], 0x1234u);
}

// A loop whose float forms run across chained blocks, register-only code, handlers that read
// and write MXCSR (CVTTSD2SI raising its flags, STMXCSR, LDMXCSR clearing the flags) and
// Jcc after UCOMISD, under every rounding mode, FTZ and DAZ: the XMM registers, MXCSR and
// what STMXCSR read along the way are the SIMD unit's.
TEST(JitInlineFormsTest, SseFloatRunsAcrossHandlersAndChainedBlocksMatchTheSimdUnit) {
  static constexpr uint32_t kMxcsr[] = {0x1f80, 0x3f80, 0x5f80, 0x7f80, 0x9f80, 0x1fc0, 0xffc0};
  constexpr uint32_t kScratch = 0x7f0, kOut = 0x1000;
  for (const uint32_t mxcsr : kMxcsr) {
    SCOPED_TRACE(::testing::Message() << "mxcsr " << std::hex << mxcsr);
    std::mt19937_64 random(mxcsr);
    std::vector<uint8_t> data(kDataBytes);
    for (uint32_t offset = 0; offset < 0x700; offset += 8) {
      const uint64_t bits = pick_float_bits(random);
      for (int byte = 0; byte < 8; ++byte) data[offset + byte] = static_cast<uint8_t>(bits >> (8 * byte));
    }
    const std::vector<uint8_t> program = assemble([&](CodeGenerator& c) {
      Xbyak::Label top, second, over, keep;
      c.mov(rdi, kData);
      c.mov(r15, 0);
      c.mov(rax, 0x123456789);
      c.mov(dword[rdi + kScratch], mxcsr);
      c.ldmxcsr(dword[rdi + kScratch]);
      for (int index = 0; index < 16; ++index) c.movdqu(Xbyak::Xmm(index), ptr[rdi + 16 * index]);
      c.mov(r8d, 40);
      c.L(top);
      c.addsd(xmm0, xmm1);
      c.mulsd(xmm2, ptr[rdi + 0x118]);
      c.divsd(xmm3, xmm4);
      c.cvtsi2sd(xmm5, rax);
      c.add(rax, 0x7654321);  // register-only, within the run
      c.subps(xmm6, xmm7);
      c.sqrtsd(xmm8, xmm0);
      c.mulpd(xmm9, ptr[rdi + 0x120]);
      c.jmp(second, CodeGenerator::T_NEAR);  // a chained block boundary
      c.L(second);
      c.addss(xmm11, ptr[rdi + 0x124]);
      c.divps(xmm12, xmm13);
      c.cvttsd2si(rdx, xmm3);  // the SIMD unit's handler: invalid or inexact flags too
      c.add(r15, rdx);
      c.mulsd(xmm3, xmm8);
      c.ucomisd(xmm0, xmm2);
      c.ja(over);
      c.add(r15, 1);
      c.L(over);
      c.minsd(xmm10, xmm9);
      c.cvtsi2ss(xmm14, rdx);
      c.maxpd(xmm15, xmm1);
      c.test(r8b, 7);
      c.jnz(keep, CodeGenerator::T_NEAR);
      // Every eighth round: the flags so far, then cleared.
      c.stmxcsr(dword[rdi + kScratch + 4]);
      c.add(r15d, dword[rdi + kScratch + 4]);
      c.rol(r15, 7);
      c.ldmxcsr(dword[rdi + kScratch]);
      c.L(keep);
      c.dec(r8d);
      c.jnz(top, CodeGenerator::T_NEAR);
      c.stmxcsr(dword[rdi + kScratch + 8]);
      for (int index = 0; index < 16; ++index) c.movdqu(ptr[rdi + kOut + 16 * index], Xbyak::Xmm(index));
      c.hlt();
    });
    const auto setup = [&data](TestMachine& machine) { machine.write(kData, data); };
    const Outcome translated = compare_with(program, setup);
    expect_no_exception(translated);
    EXPECT_GT(translated.patched_exits, 0u);
  }
}

// MXCSR's flags as the instructions raised them, across a chained block boundary, a STMXCSR
// and a LDMXCSR that clears them (what the host raised before it must not come back).
TEST(JitInlineFormsTest, SseExceptionFlagsAccumulateExactly) {
  constexpr uint32_t kScratch = 0x700;
  constexpr uint32_t kInvalid = 0x01, kZero = 0x04, kOverflow = 0x08, kUnderflow = 0x10, kPrecision = 0x20;
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    Xbyak::Label second, third;
    c.mov(rdi, kData);
    const auto load = [&c](const Xbyak::Xmm& xmm, uint64_t bits) {
      c.mov(rax, bits);
      c.movq(xmm, rax);
    };
    load(xmm0, 0x3ff0000000000000ull);  // 1.0
    load(xmm1, 0x4008000000000000ull);  // 3.0
    load(xmm2, 0x7fefffffffffffffull);  // the largest double
    load(xmm3, 0x0010000000000000ull);  // the smallest normal
    load(xmm4, 0);
    load(xmm5, 0xbff0000000000000ull);  // -1.0
    load(xmm7, 0x3ff0000000000000ull);
    c.divsd(xmm0, xmm1);  // inexact
    c.jmp(second, CodeGenerator::T_NEAR);
    c.L(second);
    c.mulsd(xmm2, xmm2);  // overflow, inexact
    c.stmxcsr(dword[rdi + kScratch]);
    c.mov(dword[rdi + kScratch + 4], 0x1f80);
    c.ldmxcsr(dword[rdi + kScratch + 4]);
    c.addsd(xmm4, xmm4);  // exact
    c.stmxcsr(dword[rdi + kScratch + 8]);
    c.mulsd(xmm3, xmm3);  // underflow, inexact
    c.jmp(third, CodeGenerator::T_NEAR);
    c.L(third);
    c.sqrtsd(xmm6, xmm5);  // invalid
    c.divsd(xmm7, xmm4);   // divide by zero
    c.hlt();
  }));
  expect_no_exception(outcome);
  const auto word = [&outcome](uint32_t offset) {
    return uint32_t{outcome.data[offset]} | uint32_t{outcome.data[offset + 1]} << 8 |
           uint32_t{outcome.data[offset + 2]} << 16 | uint32_t{outcome.data[offset + 3]} << 24;
  };
  EXPECT_EQ(word(kScratch), 0x1f80 | kOverflow | kPrecision);
  EXPECT_EQ(word(kScratch + 8), 0x1f80u);
  EXPECT_EQ(outcome.state.simd.mxcsr, 0x1f80 | kInvalid | kZero | kUnderflow | kPrecision);
}

// A #PF in the middle of a run of float forms (a MOVSD load, a float form's own memory
// operand, in the run's first block or in a chained one): the fault sees the flags the forms
// before it raised and their XMM results (expect_same compares both with the interpreter's).
TEST(JitInlineFormsTest, PageFaultsInAFloatRunSeeItsFlagsAndRegisters) {
  for (const bool chained : {false, true}) {
    const auto before = [chained](CodeGenerator& c) {
      c.mov(rax, 0x3ff0000000000000ull);
      c.movq(xmm0, rax);
      c.mov(rax, 0x4008000000000000ull);
      c.movq(xmm1, rax);
      c.movq(xmm2, rax);
      c.divsd(xmm0, xmm1);  // inexact
      c.mulsd(xmm2, xmm0);
      c.cvtsi2sd(xmm3, r8);  // 2^63, exact
      if (chained) {
        Xbyak::Label next;
        c.jmp(next, CodeGenerator::T_NEAR);
        c.L(next);
        c.addsd(xmm2, xmm2);
      }
    };
    const uint32_t inexact = 0x1f80 | 0x20;
    expect_page_fault("movsd load", [](CodeGenerator& c) { c.movsd(xmm4, ptr[rdi]); }, before);
    expect_page_fault("mulsd m64", [](CodeGenerator& c) { c.mulsd(xmm2, ptr[rdi + 8]); }, before);
    expect_page_fault("comisd m64", [](CodeGenerator& c) { c.comisd(xmm0, ptr[rdi]); }, before);
    expect_page_fault("cvtsi2sd m64", [](CodeGenerator& c) { c.cvtsi2sd(xmm3, qword[rdi]); }, before);
    expect_page_fault("addps m128", [](CodeGenerator& c) { c.addps(xmm1, ptr[rdi + 16]); }, before);
    // The interpreter's MXCSR, and that it holds the flags of the forms before the fault.
    const Outcome outcome = compare(assemble([&](CodeGenerator& c) {
      c.mov(rdi, 0x40000000);
      c.mov(r8, 0x7fffffffffffffffull);
      c.add(r8, 1);
      before(c);
      c.movsd(xmm4, ptr[rdi]);
      c.hlt();
    }));
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
    EXPECT_EQ(outcome.state.simd.mxcsr, inexact);
  }
}

// (U)COMISD whose memory operand misses the TLB (its slow path, the SIMD unit) before a Jcc of
// every condition that branches on the host flags the fast path leaves: the slow path sets
// them again from the unit's flags.
TEST(JitInlineFormsTest, ComparesToFlagsOnTheirSlowPathFeedTheJcc) {
  static constexpr uint64_t kValues[] = {0xbff0000000000000ull, 0, 0x3ff0000000000000ull,
                                         0x7ff8000000000000ull};
  const Outcome outcome = compare(assemble([](CodeGenerator& c) {
    c.mov(r15, 0);
    uint64_t page = 0x300000;  // pages nothing touched before: each access misses the TLB
    for (const uint64_t value : kValues) {
      c.mov(rax, value);
      c.movq(xmm0, rax);
      for (int condition = 0; condition < 16; ++condition) {
        c.mov(rsi, page);
        page += 0x1000;
        if (condition % 2 == 0) {
          c.comisd(xmm0, ptr[rsi]);
        } else {
          c.ucomisd(xmm0, ptr[rsi + 8]);
        }
        jump_over_add(c, condition);
        c.rol(r15, 3);
      }
    }
    c.hlt();
  }));
  expect_no_exception(outcome);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
