// The JIT against the interpreter: the same 64-bit programs on both engines must end in the
// same state with the same instruction count, through inlined forms, handler calls, faults in
// the middle of a block, self-modifying code and code cache flushes.
#include <gtest/gtest.h>

#include <cstdint>
#include <chrono>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/jit/jit_engine.h"
#include "cpu/x86/shared_code_pages.h"
#include "jit_test_program.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;

TEST(JitEngineTest, IntegerLoopMatchesTheInterpreter) {
  expect_no_exception(compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, skip, below;
    c.mov(ecx, 1000);
    c.xor_(eax, eax);
    c.mov(rbx, 0x123456789ull);
    c.mov(r9, 0);
    c.L(loop);
    c.add(eax, ecx);
    c.lea(rdx, ptr[rax + rcx * 4 + 7]);
    c.sub(rbx, rdx);
    c.xor_(ebx, 0x5a);
    c.mov(r8b, al);
    c.mov(ah, cl);
    c.or_(dx, 0x4001);
    c.and_(r11, rdx);
    c.cmp(bl, 0x40);
    c.adc(r10, 0);  // a handler reading the inlined CMP's flags
    c.test(edx, 0x100);
    c.jz(skip);
    c.inc(r9);
    c.L(skip);
    c.push(rax);  // handler calls between inlined forms
    c.imul(rsi, rdx, 3);
    c.pop(rdi);
    c.shl(rdi, 3);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.cmp(rbx, rax);
    c.jb(below);
    c.mov(r10, 1);
    c.L(below);
    c.mov(rcx, kData);
    c.mov(qword[rcx], rbx);
    c.hlt();
  })));
}

TEST(JitEngineTest, FlagsFromEveryInlinedOperationReachTheHandlers) {
  // Each inlined flag-setting form followed by PUSHF (a handler) and a Jcc on every condition.
  expect_no_exception(compare(assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r15, 0);
    // Kept below 64 KiB of code (the handler lies at kCode + 64 KiB).
    const uint64_t values[] = {0, 0x7f, 0x80, 0x8000, 0xffffffff, 0x80000000,
                               0x7fffffffffffffffull, ~0ull};
    for (uint64_t a : values) {
      for (uint64_t b : {uint64_t{1}, uint64_t{0x80}, ~uint64_t{0}}) {
        for (int form = 0; form < 16; ++form) {
          c.mov(rax, a);
          c.mov(rcx, b);
          switch (form) {
            case 0: c.add(eax, ecx); break;
            case 1: c.sub(al, cl); break;
            case 2: c.cmp(rax, rcx); break;
            case 3: c.and_(ax, cx); break;
            case 4: c.inc(rax); break;
            case 5: c.dec(eax); break;
            case 6: c.test(cl, al); break;
            case 7: c.xor_(rax, rcx); break;
            case 8: c.shl(eax, 3); break;
            case 9: c.shr(ax, 1); break;
            case 10: c.sar(rax, 63); break;
            case 11: c.shl(al, 7); break;
            case 12: c.imul(eax, ecx); break;
            case 13: c.imul(rax, rcx, -3); break;
            case 14: c.imul(cx, ax, 0x1234); break;
            default: c.shr(rcx, 33); break;
          }
          c.pushfq();
          c.pop(rdx);
          c.add(r15, rdx);
          for (int condition = 0; condition < 16; ++condition) {
            Xbyak::Label next;
            c.db(0x70 | condition);  // Jcc rel8 to `next` (2 bytes on)
            c.db(4);
            c.add(r15, condition);  // 4 bytes: REX.W 83 /0 ib
            c.L(next);
          }
          c.rol(r15, 7);
        }
      }
    }
    c.hlt();
  })));
}

// The forms the profile of the default guest put next (translator_data.cc), within one block
// so that each reads the flags of the inlined producer before it: ADC/SBB after every kind of
// producer (and after themselves), NEG, SETcc and CMOVcc on all 16 conditions, shifts and
// rotates whose flags the next instruction overwrites, MOVSXD, CBW/CWD, BSWAP, NOT, hint NOPs.
TEST(JitEngineTest, ProfiledFormsMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](Xbyak::CodeGenerator& c) {
    const auto bytes = [&c](std::initializer_list<uint8_t> list) {
      for (uint8_t byte : list) c.db(byte);
    };
    c.mov(rsi, kData);
    c.mov(r15, 0);
    // Kept below 64 KiB of code (the handler lies at kCode + 64 KiB).
    const uint64_t values[] = {0, 0x80, 0x80000000, 0x7fffffffffffffffull, ~0ull};
    for (uint64_t a : values) {
      for (uint64_t b : {uint64_t{1}, ~uint64_t{0}}) {
        for (int form = 0; form < 12; ++form) {
          c.mov(rax, a);
          c.mov(rcx, b);
          c.mov(rdx, a ^ b);
          switch (form) {
            case 0: c.cmp(rax, rcx); c.adc(rdx, rcx); break;       // carry of a SUB
            case 1: c.add(eax, ecx); c.sbb(dx, ax); break;         // of an ADD
            case 2: c.test(eax, ecx); c.adc(dl, 0x7f); break;      // of a logic operation
            case 3: c.inc(rcx); c.sbb(rdx, -2); break;             // kept by INC (unknown before)
            case 4: c.sub(rax, rcx); c.adc(rax, rdx); c.adc(ecx, eax); c.sbb(rdx, rcx); break;  // chains
            case 5: c.neg(rax); c.adc(cl, ah); break;
            case 6: c.neg(cx); break;
            case 7: c.rol(eax, 7); c.ror(rcx, 63); c.mov(rdx, rcx); c.shl(cl, 1); c.ror(rdx, cl); c.add(rdx, rax); break;
            case 8: c.sar(rax, cl); c.rol(dx, 1); c.shr(ecx, 3); c.ror(ah, 3); c.rol(rdx, 8); c.ror(cl, 17); break;
            case 9: c.movsxd(rdx, eax); c.cdqe(); c.cqo(); c.sub(rdx, rcx); break;
            case 10: bytes({0x63, 0xd1}); c.cwde(); c.cdq(); c.bswap(rcx); c.bswap(edx); c.not_(ax); c.cmp(ecx, edx); break;
            default: bytes({0x0f, 0x1f, 0x44, 0x00, 0x00}); c.not_(rdx); c.cbw(); c.cwd(); c.neg(dl); c.sbb(eax, edx); break;
          }
          // Every condition of the producer's flags, by SETcc and CMOVcc.
          for (int condition = 0; condition < 16; ++condition) {
            bytes({0x0f, static_cast<uint8_t>(0x90 | condition), static_cast<uint8_t>(0xc0 | (condition & 7))});  // SETcc AL..BH
            c.mov(r8, static_cast<uint64_t>(condition) * 0x1111);
            bytes({0x4d, 0x0f, static_cast<uint8_t>(0x40 | condition), 0xc8});  // cmovcc r9, r8
            bytes({0x44, 0x0f, static_cast<uint8_t>(0x40 | condition), 0xd0});  // cmovcc r10d, eax
            // LEA leaves the flags alone: every condition reads the producer's.
            c.lea(r15, ptr[r15 + r9]);
            c.lea(r15, ptr[r15 + r10]);
          }
          c.pushfq();
          c.pop(r11);
          c.add(r15, r11);
          c.add(r15, rax);
          c.add(r15, rcx);
          c.add(r15, rdx);
          c.rol(r15, 7);
        }
      }
    }
    c.hlt();
  })));
}

TEST(JitEngineTest, BitScansBitTestsMultipliesAndMemoryCmovMatchTheInterpreter) {
  // translator_bits.cc's forms and CMOVcc from memory, with their flags read by every
  // condition and PUSHF, and with their flags overwritten before anything reads them.
  expect_no_exception(compare(assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(r15, 0);
    const uint64_t values[] = {0, 1, 0x80, 0x80000000, 0x7fffffffffffffffull, ~0ull, 0x123456789abcdef0ull};
    for (uint64_t a : values) {
      for (uint64_t b : {uint64_t{0}, uint64_t{3}, ~uint64_t{0} - 5}) {
        for (int form = 0; form < 8; ++form) {
          c.mov(rax, a);
          c.mov(rcx, b);
          c.mov(rdx, a ^ 0x5555);
          c.mov(qword[rsi + 8], rcx);
          c.mov(qword[rsi + 16], rdx);
          c.cmp(rax, rcx);  // flags from before, partly kept by BSF/BT
          switch (form) {
            case 0: c.bsf(rdx, rax); break;
            case 1: c.bsr(edx, ecx); c.bsf(dx, ax); break;
            case 2: c.bt(rax, rcx); break;
            case 3: c.bts(ecx, eax); c.btr(rdx, 63); c.btc(ax, 5); c.bt(rcx, 7); break;
            case 4: c.mul(rcx); break;
            case 5: c.mul(ecx); break;
            case 6: c.cmovz(r9, qword[rsi + 8]); c.cmovnz(r10d, dword[rsi + 16]); c.cmovb(dx, word[rsi + 8]); break;
            default: c.bsr(rdx, rax); c.add(rdx, rcx); c.bt(rax, 3); c.sub(rax, rdx); c.mul(rdx); c.xor_(rax, rcx); break;
          }
          // Every condition, with nothing between that changes the flags: SETcc to memory.
          for (int condition = 0; condition < 16; ++condition) {
            c.db(0x0f), c.db(static_cast<uint8_t>(0x90 | condition)), c.db(0x46), c.db(static_cast<uint8_t>(0x40 + condition));  // setcc [rsi + 0x40 + condition]
          }
          c.pushfq();
          c.pop(r11);
          c.add(r15, r11);
          c.add(r15, qword[rsi + 0x40]);
          c.rol(r15, 3);
          c.add(r15, qword[rsi + 0x48]);
          c.add(r15, rax);
          c.add(r15, rcx);
          c.add(r15, rdx);
          c.add(r15, r9);
          c.add(r15, r10);
          c.rol(r15, 7);
        }
      }
    }
    c.hlt();
  })));
}

TEST(JitEngineTest, ACmovThatDoesNotMoveStillFaultsOnItsSource) {
  // CMOVcc reads its memory source whether or not the condition holds (SDM vol. 2, CMOVcc).
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rsi, kData);
    c.mov(rax, qword[rsi]);  // a warm TLB for the data page, then an unmapped page
    c.mov(rsi, 0x40000000);
    c.xor_(eax, eax);
    c.cmovnz(rax, qword[rsi]);
    c.mov(ebx, 0x1234);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
  EXPECT_EQ(outcome.state.cr2, 0x40000000u);
}

TEST(JitEngineTest, MemoryAccessesMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, local;
    c.mov(rsi, kData);
    c.mov(ecx, 300);
    c.L(loop);
    c.mov(qword[rsi + rcx * 8], rcx);        // stores of every size
    c.mov(dword[rsi + rcx * 4 + 0x1000], ecx);
    c.mov(word[rsi + rcx * 2 + 0x2000], cx);
    c.mov(byte[rsi + rcx + 0x3000], cl);
    c.mov(byte[rsi + rcx + 0x3100], 0xa5);   // immediates (negative as bytes and words)
    c.mov(dword[rsi + rcx * 4 + 0x4000], 0x9234c678);
    c.mov(qword[rsi + rcx * 8 + 0x5000], -2);
    c.mov(rax, qword[rsi + rcx * 8]);        // loads of every size, merged and extended
    c.add(rdi, rax);
    c.mov(edx, dword[rsi + rcx * 4 + 0x1000]);
    c.mov(dx, word[rsi + rcx * 2 + 0x2000]);
    c.mov(dh, byte[rsi + rcx + 0x3000]);
    c.mov(r9b, byte[rsi + rcx + 0x3100]);
    c.add(r8, rdx);
    c.movzx(eax, byte[rsi + rcx + 0x3000]);   // extensions from memory and registers
    c.movsx(r10, word[rsi + rcx * 4 + 0x4000]);
    c.movsx(r11, byte[rsi + rcx + 0x3100]);
    c.add(r8, r11);
    c.movsx(bx, byte[rsi + rcx + 0x3100]);
    c.movsx(r14d, ch);
    c.movzx(r15, r9w);
    c.add(r8, rax);
    c.add(r8, r10);
    c.add(r8, rbx);
    c.add(r8, r14);
    c.add(r8, r15);
    c.add(r8, qword[rsi + rcx * 8]);          // ALU forms reading memory
    c.sub(r8d, dword[rsi + rcx * 4 + 0x1000]);
    c.xor_(r9b, byte[rsi + rcx + 0x3100]);
    c.cmp(word[rsi + rcx * 2 + 0x2000], 150);
    c.adc(r13, 0);
    c.cmp(qword[rsi + rcx * 8 + 0x5000], r8);
    c.sbb(r13, 0);
    c.test(byte[rsi + rcx + 0x3000], 0x81);
    c.setnz(al);
    c.add(r13, rax);
    c.mov(qword[rsi + 0xffd], rdi);          // crosses a page: the handler's path
    c.mov(r10, qword[rsi + 0xffd]);
    c.mov(qword[rip + local], r10);          // RIP-relative, a page after the code
    c.push(rcx);
    c.push(r8);
    c.pop(r11);
    c.pop(r12);
    c.add(r13, r11);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.mov(rax, qword[rip + local]);
    c.hlt();
    c.align(4096);
    c.L(local);
    c.dq(0);
  })));
}

TEST(JitEngineTest, CallsAndReturnsMatchTheInterpreter) {
  expect_no_exception(compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, function, leaf, done;
    c.mov(ecx, 200);
    c.L(loop);
    c.call(function);
    c.dec(ecx);
    c.jnz(loop);
    c.jmp(done);
    c.L(function);
    c.add(rax, rcx);
    c.call(leaf);
    c.ret();
    c.L(leaf);
    c.push(rax);
    c.xor_(rax, rsi);
    c.pop(rsi);
    c.ret();
    c.L(done);
    c.hlt();
  })));
}

TEST(JitEngineTest, AReturnToANonCanonicalAddressFaultsPrecisely) {
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rax, 0x0000800000000000ull);  // not canonical
    c.push(rax);
    c.mov(ebx, 7);
    c.ret();  // #GP(0) with RSP and RIP as before it
  }));
  EXPECT_EQ(outcome.state.gpr[kRbx], 7u);
}

// JMP/CALL r/m64 inline: a non-canonical target raises #GP(0) before CALL pushes anything,
// with RIP at the branch (the pushed RIP and RSP are compared).
TEST(JitEngineTest, IndirectBranchesToNonCanonicalAddressesFaultPrecisely) {
  for (int form = 0; form < 4; ++form) {
    SCOPED_TRACE(form);
    const Outcome outcome = compare(assemble([form](Xbyak::CodeGenerator& c) {
      c.mov(rax, 0x0000800000000000ull);  // not canonical
      c.mov(rsi, kData);
      c.mov(qword[rsi + 8], rax);
      c.mov(ebx, 7);
      switch (form) {
        case 0: c.jmp(rax); break;
        case 1: c.call(rax); break;
        case 2: c.jmp(qword[rsi + 8]); break;
        default: c.call(qword[rsi + 8]); break;
      }
      c.mov(ebx, 9);
      c.hlt();
    }));
    EXPECT_EQ(outcome.state.gpr[kRbx], 7u);
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
  }
}

// ADD/INC of memory inline: a #PF on the access leaves the flags of the instruction before.
TEST(JitEngineTest, PageFaultInAReadModifyWriteKeepsTheFlagsBeforeIt) {
  for (int form = 0; form < 3; ++form) {
    SCOPED_TRACE(form);
    const Outcome outcome = compare(assemble([form](Xbyak::CodeGenerator& c) {
      c.mov(eax, 0x7fffffff);
      c.mov(rcx, 0x40000000);  // not mapped
      c.add(eax, 1);           // OF, SF, AF set: they must survive the fault
      switch (form) {
        case 0: c.add(dword[rcx], eax); break;
        case 1: c.inc(qword[rcx]); break;
        default: c.sub(byte[rcx + 5], 3); break;
      }
      c.mov(eax, 99);
      c.hlt();
    }));
    EXPECT_EQ(outcome.state.cr2 & ~uint64_t{0xf}, 0x40000000u);
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
  }
}

TEST(JitEngineTest, PageFaultInTheMiddleOfABlockIsPrecise) {
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
    c.mov(eax, 5);
    c.add(eax, 7);
    c.mov(rcx, 0x40000000);  // not mapped: the store below raises #PF
    c.mov(dword[rcx], eax);
    c.mov(eax, 99);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.gpr[kRax], 12u);
  EXPECT_EQ(outcome.state.cr2, 0x40000000u);
  // The handler ran (and halted) with the pushed RIP the interpreter pushes, compared above.
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
}

TEST(JitEngineTest, CachedRegistersAreWrittenBackBeforeAMidBlockPageFault) {
  // More guest registers than the five host registers that cache them, partial writes (AH,
  // AL, AX, EAX), and flags set and overwritten before the faulting store sees them.
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rax, 0x1122334455667788ull);
    c.mov(rbx, 0x0102030405060708ull);
    c.mov(rsi, 0x8000000000000001ull);
    c.add(ah, bl);
    c.sub(al, bh);
    c.xor_(ax, si);
    c.mov(rcx, rax);
    c.add(ecx, ebx);
    c.movzx(edx, ah);
    c.movsx(rdi, cx);
    c.lea(r8, ptr[rax + rbx * 2 + 5]);
    c.imul(r9, r8, 7);
    c.shr(r9, 3);
    c.or_(r10, r9);
    c.and_(r11, r8);
    c.sub(rsi, rdi);  // the flags the fault sees
    c.mov(rcx, 0x40000000);  // not mapped: the store below raises #PF
    c.mov(dword[rcx], eax);
    c.mov(eax, 99);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.cr2, 0x40000000u);
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
}

TEST(JitEngineTest, SelfModifyingCodeRunsTheNewInstructions) {
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label outer, inner, patched;
    c.mov(ecx, 20);
    c.xor_(ebx, ebx);
    c.L(outer);
    // Writes the counter into the immediate of the MOV below: into the running block (this
    // one runs on into it) and into the inner loop's block, translated by now.
    c.mov(dword[rip + patched + 1], ecx);
    c.mov(edx, 5);
    c.L(inner);
    c.L(patched);
    c.mov(eax, 0x11111111);
    c.add(ebx, eax);
    c.dec(edx);
    c.jnz(inner);
    c.dec(ecx);
    c.jnz(outer);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.gpr[kRbx], 5u * 210u);  // five times 20 + 19 + ... + 1
}

TEST(JitEngineTest, AFullCodeCacheIsFlushedAndStaysWithinItsBound) {
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
                                    Xbyak::Label start;
                                    c.mov(r8d, 3);
                                    c.L(start);
                                    // 400 blocks, each a few inlined forms and a JMP on.
                                    for (int block = 0; block < 400; ++block) {
                                      Xbyak::Label next;
                                      c.add(eax, block);
                                      c.xor_(edx, eax);
                                      c.lea(rsi, ptr[rsi + rdx + block]);
                                      c.jmp(next, Xbyak::CodeGenerator::T_NEAR);
                                      c.L(next);
                                    }
                                    c.dec(r8d);
                                    c.jnz(start, Xbyak::CodeGenerator::T_NEAR);
                                    c.hlt();
                                  }),
                                  4096);
  EXPECT_GT(outcome.flushes, 0u);
  EXPECT_LE(outcome.cache_used, outcome.cache_capacity);
  EXPECT_EQ(outcome.cache_capacity, 4096u);
}

// An endless loop of two chained blocks, and one of a single block that branches to its own
// start (translated code loops inside its own body there).
std::vector<uint8_t> two_block_loop() {
  return assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, other;
    c.L(loop);
    c.add(rax, 3);
    c.jmp(other, Xbyak::CodeGenerator::T_NEAR);
    c.L(other);
    c.xor_(rbx, rax);
    c.inc(rcx);
    c.jmp(loop, Xbyak::CodeGenerator::T_NEAR);
  });
}

std::vector<uint8_t> one_block_loop() {
  return assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.L(loop);
    c.add(rax, 3);
    c.xor_(rbx, rax);
    c.dec(rcx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.jmp(loop, Xbyak::CodeGenerator::T_NEAR);
  });
}

TEST(JitEngineTest, AOneBlockLoopKeepsItsRegistersAcrossRoundsExactly) {
  // A loop of one block keeps its registers in host registers over the back edge and writes
  // them back on the way out (the loop's end, the budget), with partial and 16-bit writes.
  const std::vector<uint8_t> program = assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(ecx, 3000);
    c.mov(rax, 0x0123456789abcdefull);
    c.L(loop);
    c.add(rax, rbx);
    c.xor_(edx, eax);
    c.lea(rbx, ptr[rbx + rdx * 2 + 1]);
    c.imul(si, ax, 7);
    c.shr(rdi, 3);
    c.or_(rdi, rsi);
    c.add(al, cl);
    c.sub(r9w, dx);
    c.movzx(r10d, r9b);
    c.and_(r11d, edi);  // CF clear before the counter's DEC, whose flags the loop defers
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  for (const uint64_t budget : {uint64_t{10'000'000}, uint64_t{12345}, uint64_t{12346}}) {
    const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, budget);
    const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, budget);
    expect_same(interpreted, translated);
  }
}

TEST(JitEngineTest, ABudgetEndsATightChainedLoopAtTheSameInstruction) {
  // Translated code goes from block to block (or round its own body) without the run loop:
  // the budget check must still stop it where the interpreter stops.
  const std::vector<std::vector<uint8_t>> loops = {two_block_loop(), one_block_loop()};
  for (const std::vector<uint8_t>& program : loops) {
    for (const uint64_t budget : {uint64_t{1000}, uint64_t{1001}, uint64_t{77777}}) {
      const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, budget);
      const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, budget);
      expect_same(interpreted, translated);
      EXPECT_EQ(translated.exit, CpuExit::Kind::kBudgetExhausted);
      EXPECT_GE(translated.retired, budget);
      // The two blocks jump to each other through patched exits (exit_site.h).
      if (&program != &loops.back()) {
        EXPECT_GT(translated.patched_exits, 0u);
      }
    }
  }
}

TEST(JitEngineTest, AnInterruptReachesATightChainedLoop) {
  // Another thread posts an interrupt while an endless loop runs; its handler (HLT) must run
  // long before the budget.
  for (const std::vector<uint8_t>& program : {two_block_loop(), one_block_loop()}) {
    constexpr uint64_t kBudget = 20'000'000'000;
    CpuConfiguration configuration;
    configuration.engine = CpuEngine::kJit;
    TestMachine machine(16 << 20, configuration);
    machine.enter_long_mode(0);
    machine.write(kCode, program);
    const uint8_t halt[] = {0xf4};
    machine.write(kHandler, halt);
    machine.set_long_gate(0x40, kHandler);
    machine.state().rip = kCode;
    machine.state().gpr[kRsp] = kStackTop;
    machine.state().rflags |= rflags::kIf;
    machine.environment().interrupts.push_back(0x40);
    CpuExit exit;
    {
      std::jthread poster([&machine] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        machine.cpu().post(request::kInterrupt);
      });
      exit = machine.cpu().run(kBudget);
    }
    EXPECT_EQ(exit.kind, CpuExit::Kind::kHalted);
    EXPECT_EQ(machine.state().rip, kHandler + 1);
    EXPECT_LT(exit.instructions, kBudget);
    ASSERT_NE(machine.cpu().jit(), nullptr);
    EXPECT_GT(machine.cpu().jit()->translations(), 0u);
    // The endless loop ran through patched exits when it was the two-block one.
    if (program.size() == two_block_loop().size()) {
      EXPECT_GT(machine.cpu().jit()->patched_exits(), 0u);
    }
  }
}

// An interrupt posted while IF is clear is parked (the JIT does not leave every block for it)
// and arrives where the instruction that sets IF lets it: after the instruction behind STI
// (its shadow), right after POPF and IRETQ. On both engines, in one run() call, so a window
// that did not reopen at once (only at the next time slice) reaches the final HLT instead.
TEST(JitEngineTest, AnInterruptPostedWhileIfIsClearArrivesWhenIfIsSet) {
  enum class Opener { kSti, kPopf, kIretq };
  for (Opener opener : {Opener::kSti, Opener::kPopf, Opener::kIretq}) {
    const std::vector<uint8_t> program = assemble([opener](Xbyak::CodeGenerator& c) {
      Xbyak::Label loop, resume;
      c.mov(ecx, 200000);
      c.L(loop);
      c.dec(ecx);
      c.jnz(loop);
      c.mov(ebx, 0x1234);
      switch (opener) {
        case Opener::kSti: c.sti(); break;
        case Opener::kPopf:
          c.pushfq();
          c.or_(qword[rsp], 0x200);
          c.popfq();
          break;
        case Opener::kIretq:
          // An IRETQ frame back to `resume` at CPL 0 with IF set: SS, RSP, RFLAGS, CS, RIP.
          c.mov(rax, rsp);
          c.push(0x10);
          c.push(rax);
          c.pushfq();
          c.or_(qword[rsp], 0x200);
          c.push(0x08);
          c.mov(rax, resume);
          c.push(rax);
          c.db(0x48);  // REX.W IRET: IRETQ
          c.db(0xcf);
          break;
      }
      c.L(resume);
      c.nop();
      c.mov(ebx, 0x5678);
      c.mov(edx, 0x9abc);
      c.hlt();
    });
    for (CpuEngine engine : {CpuEngine::kInterpreter, CpuEngine::kJit}) {
      const Outcome outcome = run_on(engine, program, 1 << 20, 10'000'000, [](TestMachine& machine) {
        machine.set_long_gate(0x40, kHandler);
        machine.environment().interrupts.push_back(0x40);
        machine.cpu().post(request::kInterrupt);
      });
      const char* name = opener == Opener::kSti ? "sti" : opener == Opener::kPopf ? "popf" : "iretq";
      EXPECT_EQ(outcome.exit, CpuExit::Kind::kHalted) << name;
      EXPECT_EQ(outcome.state.rip, kHandler + 1) << name << ": the interrupt never came";
      EXPECT_EQ(outcome.state.gpr[kRcx], 0u) << name << ": it came while IF was clear";
      EXPECT_NE(outcome.state.gpr[kRdx], 0x9abcu) << name << ": it came late";
      // STI's shadow lets the NOP run first; POPF and IRETQ open the window at once.
      EXPECT_EQ(outcome.state.gpr[kRbx], 0x1234u) << name;
    }
  }
}

TEST(JitEngineTest, AJumpTargetRewrittenWhileChainedRunsTheNewCode) {
  // Block A jumps to block B and B back to A; after they are chained, A rewrites B's
  // immediate. Every round must add the value just written.
  const Outcome translated = compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label a, b, patched, done;
    c.mov(ecx, 40);
    c.xor_(ebx, ebx);
    c.L(a);
    c.cmp(ecx, 20);
    c.jb(b, Xbyak::CodeGenerator::T_NEAR);  // from round 20 on, rewrite B each time
    c.mov(dword[rip + patched + 1], ecx);
    c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
    c.align(256);
    c.L(b);
    c.L(patched);
    c.mov(eax, 1);
    c.add(ebx, eax);
    c.dec(ecx);
    c.jnz(a, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  }));
  expect_no_exception(translated);
  // A patched exit led into B before it was rewritten.
  EXPECT_GT(translated.patched_exits, 0u);
}

TEST(JitEngineTest, AVcpusOwnWriteToSharedCodeReachesAChainedLoop) {
  // One vCPU with the VM's SharedCodePages (as every emulated VM has): its store into a code
  // page posts no request to itself (SharedCodePages::note_write), so the store's own drop of
  // the page's blocks must retire the patched exit into the rewritten block. A jumps to B on
  // the next page, B back to A; from round 20 on, A rewrites B's immediate first.
  SharedCodePages shared(16 << 20);
  CpuConfiguration configuration;
  configuration.engine = CpuEngine::kJit;
  configuration.shared_code = &shared;
  TestMachine machine(16 << 20, configuration);
  machine.enter_long_mode(0);
  machine.write(kCode, assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label a, b, patched, skip;
    c.mov(ecx, 40);
    c.xor_(ebx, ebx);
    c.L(a);
    c.cmp(ecx, 20);
    c.ja(skip, Xbyak::CodeGenerator::T_NEAR);
    c.mov(dword[rip + patched + 1], ecx);
    c.L(skip);
    c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
    c.align(4096);
    c.L(b);
    c.L(patched);
    c.mov(eax, 1);
    c.add(ebx, eax);
    c.dec(ecx);
    c.jnz(a, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  }));
  machine.state().rip = kCode;
  machine.state().gpr[kRsp] = kStackTop;
  const CpuExit exit = machine.cpu().run(1'000'000);
  EXPECT_EQ(exit.kind, CpuExit::Kind::kHalted);
  // Rounds with ECX 40..21 add 1, then each adds the ECX it wrote: 20 + (20 + 19 + ... + 1).
  EXPECT_EQ(machine.state().gpr[kRbx], 20u + 210u);
  EXPECT_GT(machine.cpu().jit()->patched_exits(), 0u);
}

TEST(JitEngineTest, AnotherVcpusWriteReachesAChainedLoop) {
  // vCPU 0 loops through two chained blocks, X and Y, until Y's immediate becomes nonzero;
  // vCPU 1, on another thread, writes it. Translated code chaining from X into Y's old
  // translation must notice (request::kCodeWritten), retranslate Y and halt.
  constexpr uint64_t kWriter = 0x130000;
  uint64_t immediate = 0;
  const std::vector<uint8_t> program = assemble([&immediate](Xbyak::CodeGenerator& c) {
    Xbyak::Label x, y;
    c.L(x);
    c.inc(rbx);
    c.jmp(y, Xbyak::CodeGenerator::T_NEAR);
    c.align(256);
    c.L(y);
    immediate = kCode + c.getSize() + 1;
    c.mov(eax, 0);
    c.test(eax, eax);
    c.jz(x, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  SharedCodePages shared(16 << 20);
  CpuConfiguration configuration;
  configuration.engine = CpuEngine::kJit;
  configuration.shared_code = &shared;
  TestMachine machine(16 << 20, configuration);
  machine.enter_long_mode(0);
  machine.write(kCode, program);
  CpuConfiguration other_configuration = configuration;
  other_configuration.vcpu_index = 1;
  Cpu other(machine.memory(), machine.environment(), other_configuration);
  // vCPU 1: hlt (a first run marks its own code page, so that the write later posts nothing
  // but what the write itself must); mov dword [immediate], 1; hlt
  const std::vector<uint8_t> writer = assemble([immediate](Xbyak::CodeGenerator& c) {
    c.hlt();
    c.mov(rcx, immediate);
    c.mov(dword[rcx], 1);
    c.hlt();
  });
  machine.write(kWriter, writer);
  machine.state().rip = kCode;
  machine.state().gpr[kRsp] = kStackTop;
  other.state() = machine.state();
  other.state().rip = kWriter;
  other.state_changed();
  ASSERT_EQ(other.run(100).kind, CpuExit::Kind::kHalted);
  other.state().halted = false;
  constexpr uint64_t kBudget = 20'000'000'000;
  CpuExit exit;
  CpuExit::Kind writer_exit = CpuExit::Kind::kBudgetExhausted;
  {
    std::jthread second([&other, &writer_exit] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      writer_exit = other.run(100).kind;
    });
    exit = machine.cpu().run(kBudget);
  }
  EXPECT_EQ(writer_exit, CpuExit::Kind::kHalted);
  EXPECT_EQ(exit.kind, CpuExit::Kind::kHalted);
  EXPECT_EQ(machine.state().gpr[kRax], 1u);
  EXPECT_LT(exit.instructions, kBudget);
}


}  // namespace
}  // namespace lamina::cpu::x86::testing
