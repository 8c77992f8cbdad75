// Random programs with control flow, on both engines: loops (their back edges Jcc), forward Jcc
// over a few forms (side exits, or block ends past kMaxSideExits), nested loops, direct calls
// and calls through a register to random functions, indirect jumps, pushes and pops around
// forms, indexed memory forms, SSE integer and float forms, frames (push rbp ... leave) in
// functions that call each other, code that rewrites an immediate of a function it calls, padding
// that moves blocks across page ends, and now and then a fault (#PF, #GP, #DE) that ends the
// run in the handler. The forms themselves are random_forms.h's. Each program is compared at
// its end and stopped at random budgets, where both engines must agree on every register,
// RFLAGS, the retired count and memory.
//
// A longer search, by hand: LAMINA_RANDOM_PROGRAMS=N [LAMINA_RANDOM_SEED=S] runs seeds S (default
// 1) to S+N-1 instead of the suite's 12.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <xbyak/xbyak.h>

#include "jit_test_program.h"
#include "random_forms.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// A Jcc of condition `code` (0-15) to `target`.
void jcc(CodeGenerator& c, int code, const Xbyak::Label& target, CodeGenerator::LabelType type) {
  switch (code & 15) {
    case 0: c.jo(target, type); break;
    case 1: c.jno(target, type); break;
    case 2: c.jb(target, type); break;
    case 3: c.jae(target, type); break;
    case 4: c.je(target, type); break;
    case 5: c.jne(target, type); break;
    case 6: c.jbe(target, type); break;
    case 7: c.ja(target, type); break;
    case 8: c.js(target, type); break;
    case 9: c.jns(target, type); break;
    case 10: c.jp(target, type); break;
    case 11: c.jnp(target, type); break;
    case 12: c.jl(target, type); break;
    case 13: c.jge(target, type); break;
    case 14: c.jle(target, type); break;
    default: c.jg(target, type); break;
  }
}

class RandomProgram {
 public:
  static constexpr int kFunctions = 4;

  explicit RandomProgram(uint64_t seed) : random_(seed) {}

  std::vector<uint8_t> assemble_program() {
    return assemble([this](CodeGenerator& c) {
      c.mov(rsi, kData);
      c.xor_(r15d, r15d);
      for (const Xbyak::Reg64& reg : kWorking) c.mov(reg, random_());
      const int loops = 4 + static_cast<int>(random_() % 6);
      for (int loop = 0; loop < loops; ++loop) {
        const auto rounds = static_cast<uint32_t>(3 + random_() % 30);
        const int items = 4 + static_cast<int>(random_() % 30);
        emit_loop(c, r13d, rounds, items, Place::kLoop);
        if (random_() % 2 == 0) pad(c);
      }
      for (const Xbyak::Reg64& reg : kWorking) c.add(r15, reg);
      fold_pushf(c);
      c.hlt();
      for (int function = 0; function < kFunctions; ++function) {
        if (random_() % 2 == 0) pad(c);
        c.L(functions_[function]);
        // A frame now and then: the stack forms a prologue and an epilogue are made of.
        const bool frame = random_() % 2 == 0;
        if (frame) {
          c.push(rbp);
          c.mov(rbp, rsp);
          c.sub(rsp, 32);
          c.mov(qword[rbp - 8], kWorking[random_() % std::size(kWorking)]);
        }
        // mov r10d, imm32 (41 BA id), its immediate rewritten by the callers now and then.
        c.db(0x41), c.db(0xba);
        c.L(immediates_[function]);
        c.dd(static_cast<uint32_t>(random_()));
        c.add(r15, r10);
        const int items = 2 + static_cast<int>(random_() % 12);
        for (int item = 0; item < items; ++item) emit_item(c, Place::kFunction);
        // The later functions are leaves; the earlier ones call them.
        if (function + 1 < kFunctions && random_() % 2 == 0)
          c.call(functions_[function + 1 + random_() % (kFunctions - function - 1)]);
        if (frame) {
          c.add(r15, qword[rbp - 8]);
          c.leave();
        }
        c.ret();
      }
    });
  }

 private:
  enum class Place { kLoop, kInner, kFunction };

  void forms(CodeGenerator& c, int count) {
    for (int i = 0; i < count; ++i) random_form(c, static_cast<int>(random_() % 37), random_);
  }

  // `rounds` rounds of `items` random items, counted down in `counter`; the back edge a Jcc.
  void emit_loop(CodeGenerator& c, const Xbyak::Reg32& counter, uint32_t rounds, int items, Place place) {
    Xbyak::Label top;
    c.mov(counter, rounds);
    c.L(top);
    for (int item = 0; item < items; ++item) emit_item(c, place);
    c.dec(counter);
    c.jnz(top, CodeGenerator::T_NEAR);
  }

  // JMP over 0-3000 bytes of INT3: what follows starts at another page offset, so that blocks
  // and their last instructions cross page ends at random places.
  void pad(CodeGenerator& c) {
    Xbyak::Label over;
    c.jmp(over, CodeGenerator::T_NEAR);
    const size_t bytes = random_() % 3000;
    for (size_t i = 0; i < bytes; ++i) c.db(0xcc);
    c.L(over);
  }

  void emit_item(CodeGenerator& c, Place place) {
    const uint64_t kind = random_() % 26;
    const Xbyak::Reg64 a = kWorking[random_() % std::size(kWorking)];
    const Xbyak::Reg64 b = kWorking[random_() % std::size(kWorking)];
    switch (kind) {
      case 0:
      case 1: {  // a forward Jcc over a few forms: a side exit in 64-bit code
        Xbyak::Label skip;
        const int count = 1 + static_cast<int>(random_() % 4);
        jcc(c, static_cast<int>(random_() % 16), skip, CodeGenerator::T_NEAR);
        forms(c, count);
        c.L(skip);
        break;
      }
      case 2:  // a call, direct or through a register
        if (place == Place::kFunction) return forms(c, 1);
        if (random_() % 2 == 0) {
          c.call(functions_[random_() % kFunctions]);
        } else {
          c.lea(r10, ptr[rip + functions_[random_() % kFunctions]]);
          c.call(r10);
        }
        break;
      case 3: {  // an indirect jump over dead code
        Xbyak::Label target;
        c.lea(r10, ptr[rip + target]);
        c.jmp(r10);
        c.db(0x0f), c.db(0x0b);  // UD2: never reached
        c.L(target);
        break;
      }
      case 4:  // pushes and pops around forms
        c.push(a);
        c.push(b);
        forms(c, 1 + static_cast<int>(random_() % 3));
        c.pop(b);
        c.pop(a);
        break;
      case 5: {  // an indexed memory form
        c.mov(r10d, a.cvt32());
        c.and_(r10d, 0x1ff8);
        switch (random_() % 4) {
          case 0: c.mov(qword[rsi + r10], b); break;
          case 1: c.add(qword[rsi + r10], b); break;
          case 2: c.mov(b, qword[rsi + r10]); break;
          default: c.xor_(b.cvt32(), dword[rsi + r10 + 4]); break;
        }
        break;
      }
      case 6: {  // a nested loop
        if (place != Place::kLoop) return forms(c, 1);
        const auto rounds = static_cast<uint32_t>(2 + random_() % 6);
        const int items = 1 + static_cast<int>(random_() % 6);
        emit_loop(c, r14d, rounds, items, Place::kInner);
        break;
      }
      case 7:  // self-modifying code: a function's immediate rewritten
        if (place == Place::kFunction || random_() % 4 != 0) return forms(c, 1);
        c.lea(r10, ptr[rip + immediates_[random_() % kFunctions]]);
        c.mov(dword[r10], a.cvt32());
        break;
      case 8:  // now and then a fault, which ends the run in the handler
        if (place != Place::kLoop || random_() % 8 != 0) return forms(c, 1);
        {
          // Only in some round of the loop, so that the code before it is translated first.
          Xbyak::Label no;
          c.cmp(r13d, static_cast<uint32_t>(1 + random_() % 3));
          c.jne(no, CodeGenerator::T_NEAR);
          switch (random_() % 3) {
            case 0: c.mov(r10d, 0x900000 + 0x1000 * static_cast<uint32_t>(random_() % 16)); break;
            case 1: c.mov(r10, uint64_t{0x8000000000000000}); break;
            default: c.xor_(r10d, r10d); break;
          }
          if (random_() % 3 == 2) {
            c.xor_(edx, edx);
            c.div(r10);  // #DE when r10 is 0; else a quotient
          } else {
            c.add(a.cvt32(), dword[r10]);  // #PF above the 8 MiB mapped, #GP non-canonical
          }
          c.L(no);
        }
        break;
      case 9:
      case 10:
        sse_form(c, a);
        break;
      default:
        forms(c, 1);
        break;
    }
  }

  // SSE: integer and float forms on xmm0-xmm3, moves between them, the registers and kData.
  void sse_form(CodeGenerator& c, const Xbyak::Reg64& a) {
    const Xbyak::Xmm x(static_cast<int>(random_() % 4)), y(static_cast<int>(random_() % 4));
    const int offset = static_cast<int>(16 * (random_() % 32));
    switch (random_() % 14) {
      case 0: c.movq(x, a); break;
      case 1: c.movq(a, x); break;
      case 2: c.paddq(x, y); break;
      case 3: c.pxor(x, y); break;
      case 4: c.movdqu(x, ptr[rsi + offset]); break;
      case 5: c.movdqu(ptr[rsi + offset], x); break;
      case 6: c.addsd(x, y); break;
      case 7: c.mulsd(x, ptr[rsi + offset]); break;
      case 8: c.cvtsi2sd(x, a); break;
      case 9: c.cvttsd2si(a, x); break;
      case 10: c.ucomisd(x, y); break;  // the flags, for the forms after it
      case 11: c.movsd(x, ptr[rsi + offset + 8]); break;
      case 12: c.pcmpeqd(x, y); break;
      default: c.divss(x, y); break;
    }
  }

  std::mt19937_64 random_;
  std::array<Xbyak::Label, kFunctions> functions_, immediates_;
};

void compare_at_random_budgets(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::vector<uint8_t> program = RandomProgram(seed).assemble_program();
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program);
  const Outcome translated = run_on(CpuEngine::kJit, program);
  expect_same(interpreted, translated);
  ASSERT_NE(interpreted.exit, CpuExit::Kind::kBudgetExhausted) << "the program did not end";
  EXPECT_GT(translated.translations, 0u);
  std::mt19937_64 random(seed);
  for (int round = 0; round < 4; ++round) {
    const uint64_t budget = 1 + random() % interpreted.retired;
    SCOPED_TRACE("budget " + std::to_string(budget));
    expect_same(run_on(CpuEngine::kInterpreter, program, 1 << 20, budget),
                run_on(CpuEngine::kJit, program, 1 << 20, budget));
  }
}

TEST(JitRandomControlFlowTest, RandomProgramsMatchTheInterpreterAtTheirEndAndAtRandomBudgets) {
  uint64_t first = 1, seeds = 12;
  if (const char* count = std::getenv("LAMINA_RANDOM_PROGRAMS")) {
    seeds = std::strtoull(count, nullptr, 10);
    if (const char* seed = std::getenv("LAMINA_RANDOM_SEED")) first = std::strtoull(seed, nullptr, 10);
  }
  for (uint64_t seed = first; seed < first + seeds && !HasFailure(); ++seed) compare_at_random_budgets(seed);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
