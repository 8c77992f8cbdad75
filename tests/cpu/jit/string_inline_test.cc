// The JIT's inline REP MOVS and REP STOS (translator_string.cc) against the interpreter: every
// element size, counts from none to more than a page, copies overlapping forwards (each
// element read after the one before it was written), copies and fills crossing a page
// boundary, a #PF after a first chunk (RCX, RSI and RDI as the elements done leave them),
// DF set (the handler), FS-based sources and a copy over code the block runs next.
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

// Bytes 0..kDataBytes of kData hold a pattern the copies move around.
void fill_pattern(CodeGenerator& c) {
  Xbyak::Label fill;
  c.mov(rdi, kData);
  c.mov(ecx, kDataBytes / 8);
  c.mov(rax, 0x0706050403020100);
  c.mov(rdx, 0x0808080808080808);
  c.L(fill);
  c.mov(qword[rdi], rax);
  c.add(rax, rdx);
  c.add(rdi, 8);
  c.dec(ecx);
  c.jnz(fill);
}

enum class Operation { kMove, kStore };

// One REP MOVS/STOS of `size`-byte elements, `count` of them, from kData + source to kData +
// destination, run in a loop of three rounds (translated from its second) whose rounds move
// the addresses by `step` bytes; the registers after the last round are compared.
std::vector<uint8_t> repeat_program(Operation operation, uint8_t size, uint64_t count, uint64_t source,
                                    uint64_t destination, int64_t step, bool backwards = false) {
  return assemble([&](CodeGenerator& c) {
    Xbyak::Label loop;
    fill_pattern(c);
    c.mov(r12, kData + source);
    c.mov(r13, kData + destination);
    c.mov(r14d, 3);
    c.mov(rax, 0x1122334455667788);
    if (backwards) c.std();
    c.L(loop);
    c.mov(rsi, r12);
    c.mov(rdi, r13);
    c.mov(rcx, count);
    c.rep();
    if (operation == Operation::kMove) {
      switch (size) {
        case 1: c.movsb(); break;
        case 2: c.movsw(); break;
        case 4: c.movsd(); break;
        default: c.movsq(); break;
      }
    } else {
      switch (size) {
        case 1: c.stosb(); break;
        case 2: c.stosw(); break;
        case 4: c.stosd(); break;
        default: c.stosq(); break;
      }
    }
    c.add(r12, step);
    c.add(r13, step);
    c.add(rax, 0x0101);
    c.dec(r14d);
    c.jnz(loop);
    c.cld();
    c.hlt();
  });
}

void expect_like_the_interpreter(const std::vector<uint8_t>& code) {
  const Outcome translated = compare(code);
  expect_no_exception(translated);
}

TEST(JitStringTest, CopiesOfEverySizeAndCountMatchTheInterpreter) {
  for (uint8_t size : {1, 2, 4, 8}) {
    for (uint64_t count : {0, 1, 5, 7, 100, 511}) {
      SCOPED_TRACE(::testing::Message() << "size " << int{size} << " count " << count);
      // Apart, within the first page.
      expect_like_the_interpreter(repeat_program(Operation::kMove, size, count, 0x10, 0x800 + 3, 5));
    }
  }
}

TEST(JitStringTest, FillsOfEverySizeAndCountMatchTheInterpreter) {
  for (uint8_t size : {1, 2, 4, 8}) {
    for (uint64_t count : {0, 1, 6, 333}) {
      SCOPED_TRACE(::testing::Message() << "size " << int{size} << " count " << count);
      expect_like_the_interpreter(repeat_program(Operation::kStore, size, count, 0, 0x123, 9));
    }
  }
}

TEST(JitStringTest, ForwardOverlappingCopiesReplicateAsTheInterpreterDoes) {
  // The destination one element (or one byte) past the source: each element read was
  // written by the one before it.
  for (uint8_t size : {1, 2, 4, 8}) {
    for (uint64_t distance : {uint64_t{1}, uint64_t{size}, uint64_t{3}}) {
      SCOPED_TRACE(::testing::Message() << "size " << int{size} << " distance " << distance);
      expect_like_the_interpreter(repeat_program(Operation::kMove, size, 64, 0x40, 0x40 + distance, 1));
    }
  }
}

TEST(JitStringTest, CopiesAndFillsCrossingAPageMatchTheInterpreter) {
  // Source, destination or both across kData + 0x1000; an element that straddles the
  // boundary (the odd addresses with 8-byte elements) goes to the handler.
  for (uint8_t size : {1, 8}) {
    SCOPED_TRACE(int{size});
    expect_like_the_interpreter(repeat_program(Operation::kMove, size, 0x300 / size, 0xf00, 0x100, 0x11));
    expect_like_the_interpreter(repeat_program(Operation::kMove, size, 0x300 / size, 0x100, 0xe01, 0x10));
    expect_like_the_interpreter(repeat_program(Operation::kMove, size, 0x300 / size, 0xe83, 0xf05, 8));
    expect_like_the_interpreter(repeat_program(Operation::kStore, size, 0x300 / size, 0, 0xe07, 8));
    // More than the two chunks done inline: the handler finishes.
    expect_like_the_interpreter(repeat_program(Operation::kStore, size, 0x1c00 / size, 0, 0x100, 8));
  }
}

TEST(JitStringTest, CopiesCrossingIntoAPageMappedElsewhereMatchTheInterpreter) {
  // kWindow's two pages map kData's two in the other order: a chunk that ran past the end of
  // the page its lookup checked would read or write the wrong physical page.
  constexpr uint64_t kWindow = 0x40000000;
  const auto setup = [](TestMachine& machine) {
    machine.map_page(kWindow, kData + 0x1000, false, true);
    machine.map_page(kWindow + 0x1000, kData, false, true);
  };
  for (bool source_crosses : {true, false}) {
    SCOPED_TRACE(source_crosses ? "source crosses" : "destination crosses");
    const auto code = assemble([&](CodeGenerator& c) {
      Xbyak::Label loop;
      fill_pattern(c);
      c.mov(r14d, 6);
      c.L(loop);
      // A source a byte further each round: each round writes other bytes.
      c.mov(rsi, source_crosses ? kWindow + 0xf80 : kData + 0x1100);
      c.add(rsi, r14);
      c.mov(rdi, source_crosses ? kData + 0x1300 : kWindow + 0xfa0);
      c.mov(ecx, 0x100);
      c.rep();
      c.movsb();
      c.dec(r14d);
      c.jnz(loop);
      c.hlt();
    });
    const Outcome translated = compare_with(code, setup);
    expect_no_exception(translated);
  }
}

TEST(JitStringTest, BackwardsCopiesGoToTheHandler) {
  expect_like_the_interpreter(repeat_program(Operation::kMove, 1, 100, 0x300, 0x280, 3, true));
  expect_like_the_interpreter(repeat_program(Operation::kStore, 8, 20, 0, 0x400, 3, true));
}

TEST(JitStringTest, APageFaultAfterAFirstChunkLeavesTheInterpretersRegisters) {
  // kData's second page is mapped at kWindow, the page after it left unmapped: a copy into
  // the window's last 0x40 bytes and on does its first chunk inline, then faults.
  constexpr uint64_t kWindow = 0x40000000;
  const auto setup = [](TestMachine& machine) { machine.map_page(kWindow, kData + 0x1000, false, true); };
  for (Operation operation : {Operation::kMove, Operation::kStore}) {
    SCOPED_TRACE(operation == Operation::kMove ? "movs" : "stos");
    const auto code = assemble([&](CodeGenerator& c) {
      Xbyak::Label loop;
      fill_pattern(c);
      c.mov(r14d, 3);
      c.L(loop);
      c.mov(rsi, kData + 0x10);
      // The first two rounds within the window, the last one across its end.
      c.mov(rdi, kWindow + 0x800);
      c.mov(rdx, kWindow + 0xfc0);
      c.cmp(r14d, 1);
      c.cmove(rdi, rdx);
      c.mov(ecx, 0x80);
      c.mov(eax, 0x5a5a5a5a);
      c.rep();
      if (operation == Operation::kMove) {
        c.movsb();
      } else {
        c.stosb();
      }
      c.dec(r14d);
      c.jnz(loop);
      c.hlt();
    });
    const Outcome translated = compare_with(code, setup);
    EXPECT_EQ(translated.state.rip, kHandler + 1);  // the #PF
    EXPECT_EQ(translated.state.cr2, kWindow + 0x1000);
    EXPECT_EQ(translated.state.gpr[kRcx], 0x40u);  // 0x40 bytes done before it
    EXPECT_EQ(translated.state.gpr[kRdi], kWindow + 0x1000);
  }
}

TEST(JitStringTest, ASourceBasedOnFsMatchesTheInterpreter) {
  const auto code = assemble([&](CodeGenerator& c) {
    Xbyak::Label loop;
    fill_pattern(c);
    // FS.base = kData (IA32_FS_BASE, MSR 0xc0000100).
    c.mov(ecx, 0xc0000100);
    c.mov(eax, static_cast<uint32_t>(kData));
    c.xor_(edx, edx);
    c.wrmsr();
    c.mov(r14d, 3);
    c.L(loop);
    c.mov(esi, 0x20);
    c.mov(rdi, kData + 0x900);
    c.mov(ecx, 40);
    c.db(0x64);  // FS
    c.rep();
    c.movsb();
    c.dec(r14d);
    c.jnz(loop);
    c.hlt();
  });
  expect_like_the_interpreter(code);
}

TEST(JitStringTest, ACopyOverCodeTheBlockRunsNextIsSeen) {
  // The copy writes `mov eax, 2` over the `mov eax, 1` right after it, in its own block: the
  // write to a page of decoded code takes the handler, which ends the block.
  const auto code = assemble([&](CodeGenerator& c) {
    Xbyak::Label loop, patch, target, replacement;
    c.mov(r14d, 3);
    c.xor_(r15d, r15d);
    c.L(loop);
    c.lea(rsi, ptr[rip + replacement]);
    c.lea(rdi, ptr[rip + target]);
    c.mov(ecx, 5);
    c.cmp(r14d, 1);
    c.cmovne(ecx, r15d);  // only in the last round
    c.rep();
    c.movsb();
    c.L(target);
    c.mov(eax, 1);
    c.add(r15d, eax);
    c.xor_(r15d, r15d);
    c.add(r13d, eax);
    c.dec(r14d);
    c.jnz(loop);
    c.hlt();
    c.L(replacement);
    c.mov(eax, 2);
  });
  const Outcome translated = compare(code);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kR13], 1u + 1u + 2u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
