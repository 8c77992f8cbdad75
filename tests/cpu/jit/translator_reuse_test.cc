// One Translator translates every block of a vCPU, reusing its scratch buffer, its assembled
// prologue, epilogue and exit-site code and its lists of jumps to patch from block to block:
// blocks that differ in length, handler calls, memory forms and faults, translated back to
// back, must each still match the interpreter (a stale jump, count or displacement from the
// block before would send the code astray or change the retired count).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include <xbyak/xbyak.h>

#include "jit_test_program.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;

// Block `block` of the program: 1 to 64 instructions mixing register forms, inlined loads and
// stores (deferred slow paths), handler calls (PUSHF: a handler exit each) and a final Jcc.
void emit_block(Xbyak::CodeGenerator& c, int block) {
  const int length = (block * 13) % 62 + 1;
  for (int i = 0; i < length; ++i) {
    switch ((block + i) % 6) {
      case 0: c.add(rax, block * 7 + i); break;
      case 1: c.mov(qword[rsi + 8 * ((block + i) % 256)], rax); break;
      case 2: c.xor_(rbx, rax); break;
      case 3: c.add(rcx, qword[rsi + 8 * (i % 256)]); break;
      case 4:
        c.pushf();
        c.pop(rdx);
        c.add(rbx, rdx);
        break;
      default: c.inc(qword[rsi + 8 * (block % 256)]); break;
    }
  }
  Xbyak::Label next;
  c.cmp(rax, block);
  c.jne(next, Xbyak::CodeGenerator::T_NEAR);
  c.inc(rdi);
  c.L(next);
}

TEST(TranslatorReuseTest, ManyDifferentBlocksTranslatedBackToBackMatchTheInterpreter) {
  constexpr int kBlocks = 90;
  const auto program = assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r8, 3);
    Xbyak::Label round;
    c.L(round);
    for (int block = 0; block < kBlocks; ++block) emit_block(c, block);
    c.dec(r8);
    c.jnz(round, Xbyak::CodeGenerator::T_NEAR);
    // The last block faults in its middle (a non-canonical load): precise through the
    // handler exit of a block translated after all the others.
    c.mov(rdx, 0x8000000000000000ull);
    c.add(rax, 1);
    c.mov(rax, qword[rdx]);
    c.add(rax, 1);
    c.hlt();
  });
  const Outcome translated = compare(program);
  EXPECT_GE(translated.translations, static_cast<uint64_t>(kBlocks));
  EXPECT_EQ(translated.state.rip, kHandler + 1) << "the final load raises #GP";
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
