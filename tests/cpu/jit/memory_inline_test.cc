// The JIT's inline memory accesses against the interpreter: the soft TLB lookup (one tag
// compare against the page of the operand's last byte, the privilege's slot), and guest
// registers that stay in host registers across inlined memory forms, whose out-of-line slow
// paths (a TLB miss, a page crossing, a fault) must see and leave exact registers.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/system/tlb.h"
#include "jit_test_program.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;

constexpr uint64_t kUnmapped = 0x800000;  // the first byte past run_on's identity mapping
// Tlb::size() pages after kData: the same soft TLB entry, so alternating accesses to the two
// evict each other and every one takes the slow path. Past run_on's identity mapping, so
// with_conflicting_page maps it (to RAM four MiB after kData).
constexpr uint64_t kConflicting = kData + Tlb::size() * 4096;
constexpr uint64_t kConflictingPhysical = kData + 0x400000;

Outcome compare_with_setup(const std::vector<uint8_t>& program, const std::function<void(TestMachine&)>& setup) {
  const Outcome translated = compare_with(program, setup);
  EXPECT_GT(translated.translations, 0u);
  return translated;
}

// compare() for programs that use kConflicting.
Outcome compare_with_conflicting_page(const std::vector<uint8_t>& program) {
  static_assert(kConflicting >= kUnmapped);
  const Outcome outcome = compare_with_setup(program, [](TestMachine& machine) {
    machine.map_page(kConflicting, kConflictingPhysical, false, true);
  });
  expect_no_exception(outcome);
  return outcome;
}

// The physical address of the page-table entry that maps `linear` (4 KiB pages).
uint64_t pte_address(TestMachine& machine, uint64_t linear) {
  uint64_t table = TestMachine::kTableRoot;
  for (int level = 3; level > 0; --level) {
    table = machine.read64(table + ((linear >> (12 + 9 * level)) & 511) * 8) & 0xffffffffff000;
  }
  return table + ((linear >> 12) & 511) * 8;
}

// Nine and more guest registers written (dirty in host registers, the caller-saved ones
// among them) around memory forms whose slow path runs a handler: every one must reach
// CpuState before the handler and be where the fast path leaves it after.
void dirty_registers(Xbyak::CodeGenerator& c) {
  c.add(rax, 3);
  c.add(rbx, rcx);
  c.lea(rdx, ptr[rax + rbx * 2 + 1]);
  c.xor_(rbp, rdx);
  c.add(r8, 5);
  c.sub(r9, rax);
  c.add(r10d, 7);
  c.or_(r11, rdx);
  c.add(r12, rbx);
  c.add(r13, 9);
  c.add(r14, r8);
  c.add(r15, r9);
}

TEST(JitMemoryInlineTest, SlowPathsBetweenCachedRegisterWritesKeepTheRegisters) {
  compare_with_conflicting_page(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(rsi, kData);
    c.mov(rdi, kConflicting);
    c.mov(ecx, 50);
    c.L(loop);
    dirty_registers(c);
    // Each of these misses the TLB (the other page holds the entry): loads into cached and
    // uncached registers, an ALU form, a store of a dirty register and a read-modify-write.
    c.mov(qword[rsi + 8], rax);
    c.mov(rbx, qword[rdi + 16]);
    c.add(rbx, rbx);
    c.add(r12, qword[rsi + 8]);
    c.mov(qword[rdi + 16], r12);
    c.movzx(r13d, word[rsi + 8]);
    c.add(qword[rdi + 24], r13);
    c.movsx(r9, byte[rsi + 9]);
    c.mov(r11w, word[rdi + 16]);
    c.push(r10);
    c.pop(rbp);
    c.inc(dword[rsi + 32]);
    c.add(rbp, r11);
    dirty_registers(c);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.mov(rax, qword[rdi + 24]);
    c.hlt();
  }));
}

TEST(JitMemoryInlineTest, AReadOfACleanPageLeavesTheFirstWriteToSetTheDirtyFlag) {
  // A read fills the TLB without write pointers while the PTE's dirty flag is clear: the
  // first write walks and sets it (SDM 4.8).
  const auto program = assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rdi, kConflicting);
    c.mov(rdx, kData + 0x100);
    c.mov(rdx, qword[rdx]);  // the PTE's address (setup)
    c.mov(rax, qword[rdi]);
    c.mov(r8, qword[rdx]);  // after the read: accessed, not dirty
    c.mov(qword[rdi + 8], rax);
    c.mov(r9, qword[rdx]);  // after the write: dirty
    c.hlt();
  });
  const Outcome outcome = compare_with_setup(program, [](TestMachine& machine) {
    machine.map_page(kConflicting, kConflictingPhysical, false, true);
    machine.write64(kData + 0x100, pte_address(machine, kConflicting));
  });
  expect_no_exception(outcome);
  EXPECT_EQ(outcome.state.gpr[8] & 0x60, 0x20u);
  EXPECT_EQ(outcome.state.gpr[9] & 0x60, 0x60u);
}

TEST(JitMemoryInlineTest, WritesToCodeOnADirtyPageReadBeforeOrAfterItsCodeRanAreSeen) {
  // A dirty page's read fills write pointers too (mmu.cc), unless the page holds code; code
  // run from it later must take them away again. Both orders, each followed by a store into
  // the code's immediate and a second run that must return the new value.
  const auto program = assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rdi, kConflicting);
    c.mov(rax, qword[rdi + 0x800]);  // read first: write pointers filled
    c.call(rdi);                     // mov eax, 1; ret: now a code page
    c.mov(r8, rax);
    c.mov(byte[rdi + 1], 2);
    c.call(rdi);
    c.mov(r9, rax);
    c.mov(rsi, kConflicting + 0x1000);
    c.call(rsi);                     // code first
    c.mov(r10, rax);
    c.mov(rax, qword[rsi + 0x800]);  // then a read: no write pointers for a code page
    c.mov(byte[rsi + 1], 4);
    c.call(rsi);
    c.mov(r11, rax);
    c.hlt();
  });
  const Outcome outcome = compare_with_setup(program, [](TestMachine& machine) {
    const uint8_t code[] = {0xb8, 1, 0, 0, 0, 0xc3};   // mov eax, 1; ret
    const uint8_t code3[] = {0xb8, 3, 0, 0, 0, 0xc3};  // mov eax, 3; ret
    for (uint64_t page : {uint64_t{0}, uint64_t{0x1000}}) {
      machine.map_page(kConflicting + page, kConflictingPhysical + page, false, true);
      const uint64_t pte = pte_address(machine, kConflicting + page);
      machine.write64(pte, machine.read64(pte) | 0x60);  // accessed and dirty already
    }
    machine.write(kConflictingPhysical, code);
    machine.write(kConflictingPhysical + 0x1000, code3);
  });
  expect_no_exception(outcome);
  EXPECT_EQ(outcome.state.gpr[8], 1u);
  EXPECT_EQ(outcome.state.gpr[9], 2u);
  EXPECT_EQ(outcome.state.gpr[10], 3u);
  EXPECT_EQ(outcome.state.gpr[11], 4u);
}

TEST(JitMemoryInlineTest, MemoryFormsWhoseFlagsAreOverwrittenStoreNoneOnEitherPath) {
  // Flag producers with memory whose flags a register-only instruction overwrites before
  // anything reads them, on the fast path (rsi's page hits) and the slow path (rdi's page
  // evicts rsi's entry every round), with INC/DEC after a logic operation (CF taken as clear)
  // and the flags read by INC, ADC, SETcc and Jcc after the producers that stay observed.
  compare_with_conflicting_page(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, skip;
    c.mov(rsi, kData);
    c.mov(rdi, kConflicting);
    c.mov(ecx, 40);
    c.L(loop);
    c.add(rax, qword[rsi + rcx * 8]);  // dead: the SUB overwrites
    c.sub(rbx, rcx);
    c.add(r9d, dword[rsi + rcx * 4]);  // dead, of every size: each CMP overwrites
    c.cmp(r9, rcx);
    c.sub(bp, word[rsi + rcx * 2]);
    c.cmp(rbp, rcx);
    c.xor_(r10b, byte[rsi + rcx]);
    c.cmp(r10, rcx);
    c.or_(dh, byte[rsi + rcx + 1]);    // AH-BH: the general form
    c.cmp(rdx, rcx);
    c.and_(r13, qword[rsi + rcx * 8 + 8]);
    c.cmp(r13, rcx);
    c.stc();                           // CF set in CpuState: the AND clears it
    c.and_(r11, qword[rsi + rcx * 8]);  // observed: INC keeps its CF for the ADC
    c.inc(r14d);
    c.adc(r15, 0);
    c.cmp(rbx, rax);
    c.adc(rdx, 0);
    c.and_(r8d, dword[rdi + 4]);       // dead: INC takes CF clear from it
    c.inc(r9);
    c.adc(r10, 0);
    c.inc(dword[rsi + 64]);            // dead (CF not taken): the CMP overwrites
    c.cmp(r9, rcx);
    c.setb(r11b);
    c.xor_(r12, qword[rdi + 8]);       // dead: the ADD overwrites
    c.add(r12, 1);
    c.sub(qword[rsi + 16], rcx);       // observed (a hit): the SETcc reads it
    c.setbe(r14b);
    c.cmp(qword[rsi + 24], rcx);       // observed (a hit): ADC reads CF
    c.adc(r15, 0);
    c.sub(qword[rdi + 16], rcx);       // observed (a miss): the Jcc reads it
    c.jbe(skip);
    c.add(r13, 1);
    c.L(skip);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  }));
}

TEST(JitMemoryInlineTest, AFaultInTheMiddleOfABlockSeesTheCachedRegisterWrites) {
  // A one-block loop (registers kept over its back edge) that reads through a pointer until it
  // reaches the unmapped page: the #PF comes in a later round with every register written
  // since the block's start still only in host registers.
  const Outcome outcome = compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(rsi, kUnmapped - 0x40);
    c.mov(rdi, kData);
    c.xor_(edx, edx);
    c.L(loop);
    dirty_registers(c);
    c.mov(rax, qword[rsi]);
    c.add(rdx, rax);
    c.mov(qword[rdi + 8], rdx);
    c.add(rsi, 8);
    c.add(r9, 1);
    c.cmp(r9, 1000);
    c.jne(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  }));
  EXPECT_EQ(outcome.state.cr2, kUnmapped);
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
}

TEST(JitMemoryInlineTest, PageCrossingAccessesOfEverySizeTakeTheHandler) {
  // Two linear pages whose physical pages are not adjacent: an access that crossed with the
  // first page's host pointer would read or write the wrong bytes.
  constexpr uint64_t kPair = 0x40000000;
  const auto program = assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(rsi, kPair + 0x1000);
    c.mov(ecx, 9);
    c.L(loop);
    // rsi - rcx: 0xff7 .. 0xfff in the first page, crossing for all but the smallest offsets.
    c.mov(rdi, rsi);
    c.sub(rdi, rcx);
    c.mov(qword[rdi], rcx);
    c.add(rax, qword[rdi]);
    c.mov(dword[rdi + 3], ecx);
    c.add(eax, dword[rdi + 3]);
    c.mov(word[rdi + 6], cx);
    c.movzx(edx, word[rdi + 6]);
    c.add(rax, rdx);
    c.inc(word[rdi + 7]);
    c.add(rbx, qword[rdi - 1]);
    c.add(rbx, qword[rsi - 8]);  // within the page: a hit on the entry the crossings use
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.mov(r10, qword[rsi]);  // what the crossings left in the second page
    // A crossing into the unmapped page right after a hit in the page below it: #PF for the
    // second page, nothing written.
    c.mov(rdi, kUnmapped - 2);
    c.mov(r9, qword[rdi - 8]);
    c.mov(r9, 0x1122334455667788);
    c.mov(qword[rdi], r9);
    c.hlt();
  });
  const auto setup = [](TestMachine& machine) {
    machine.map_page(kPair, kData + 0x1000, true, true);
    machine.map_page(kPair + 0x1000, kData, true, true);
  };
  const Outcome outcome = compare_with_setup(program, setup);
  EXPECT_EQ(outcome.state.cr2, kUnmapped);
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
  EXPECT_NE(outcome.state.gpr[kR10], 0u);
}

TEST(JitMemoryInlineTest, NonCanonicalAddressesRaiseTheirFaults) {
  struct Case {
    uint64_t address;
    bool stack;
    uint8_t vector;
  };
  // The lowest non-canonical address, the highest one, and RSP just above the canonical top.
  for (const Case& test : {Case{0x0000800000000000, false, 13}, Case{0xffff7ffffffffff8, false, 13},
                           Case{0x0000800000000008, true, 12}}) {
    SCOPED_TRACE(test.address);
    const auto program = assemble([&](Xbyak::CodeGenerator& c) {
      Xbyak::Label loop;
      c.mov(ecx, 3);
      c.mov(rdi, kData);
      c.L(loop);  // translated rounds first, every access canonical
      c.add(qword[rdi], rcx);
      c.add(rdi, 8);
      c.dec(ecx);
      c.jnz(loop);
      c.mov(r10, 77);  // cached, written back before the fault
      if (test.stack) {
        c.mov(rsp, test.address);
        c.push(r10);
      } else {
        c.mov(rax, test.address);
        c.mov(qword[rax + rcx * 8], r10);
      }
      c.hlt();
    });
    const auto setup = [](TestMachine& machine) {
      // The #SS frame needs a stack: the IST-less gate keeps RSP, so give it a canonical one
      // through the TSS's IST1.
      machine.write64(TestMachine::kTss + 0x24, kStackTop - 0x1000);
      for (uint8_t vector = 0; vector < 32; ++vector) machine.set_long_gate(vector, kHandler, 1);
    };
    const Outcome outcome = compare_with_setup(program, setup);
    EXPECT_EQ(outcome.state.rip, kHandler + 1);
    EXPECT_EQ(outcome.state.gpr[kR10], 77u);
    // The frame's RIP (below the error code) is the faulting instruction's.
    const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, setup);
    EXPECT_EQ(outcome.stack_rip, interpreted.stack_rip);
  }
}

TEST(JitMemoryInlineTest, UserModeReadOfASupervisorPageInTheTlbFaults) {
  constexpr uint64_t kSupervisorPage = 0x40000000;
  // At CPL 0 the page is read (the TLB caches it with supervisor pointers only), then IRETQ
  // to CPL 3, whose translated reads must take the user slot: #PF (present, user).
  const auto program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label user, loop;
    c.mov(rcx, kSupervisorPage);
    c.mov(eax, dword[rcx]);
    c.mov(rdx, rsp);
    c.push(0x23);
    c.push(rdx);
    c.pushfq();
    c.push(0x1b);
    c.lea(rax, ptr[rip + user]);
    c.push(rax);
    c.db(0x48), c.db(0xcf);  // iretq
    c.L(user);
    c.mov(r8d, 3);
    c.mov(rdi, kData);
    c.L(loop);  // user reads of a user page first: translated, inline hits
    c.add(ebx, dword[rdi + r8 * 4]);
    c.dec(r8d);
    c.jnz(loop);
    c.add(ebx, dword[rcx]);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    machine.map_page(kSupervisorPage, kData + 0x1000, false, true);
    machine.write64(kData + 0x1000, 0x1234);
    machine.write64(TestMachine::kTss + 4, kStackTop - 0x1000);  // RSP0 for the #PF frame
  };
  const Outcome outcome = compare_with_setup(program, setup);
  EXPECT_EQ(outcome.state.rip, kHandler + 1);
  EXPECT_EQ(outcome.state.cr2, kSupervisorPage);
  EXPECT_EQ(outcome.state.cpl, 0);
  // The error code: present, read, user (SDM vol. 3A, 4.7).
  EXPECT_EQ(outcome.stack_word, 5u);
}

TEST(JitMemoryInlineTest, SegmentBasedAndRipRelativeAccessesMatchTheInterpreter) {
  const auto program = assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, local;
    c.mov(ecx, 20);
    c.L(loop);
    c.db(0x64), c.mov(qword[rcx * 8], rcx);      // FS base kData
    c.db(0x65), c.add(rax, qword[rcx * 8 + 8]);  // GS base kData - 8: the same qword
    c.mov(dword[rip + local], ecx);
    c.add(edx, dword[rip + local]);
    c.mov(ebx, dword[esi + 0x10]);  // a 32-bit address (67): ESI alone
    c.dec(ecx);
    c.jnz(loop);
    c.hlt();
    c.align(4096);
    c.L(local);
    c.dq(0);
  });
  const auto setup = [](TestMachine& machine) {
    machine.state().segment[kFs].base = kData;
    machine.state().segment[kGs].base = kData - 8;
    machine.state().gpr[kRsi] = 0xffffffff00000000 + kData;  // cut to kData
    machine.cpu().state_changed();
  };
  const Outcome outcome = compare_with_setup(program, setup);
  expect_no_exception(outcome);
  EXPECT_EQ(outcome.state.gpr[kRax], 20u * 21 / 2);
}

TEST(JitMemoryInlineTest, TheTlbNeverCachesANonCanonicalPage) {
  // The inline lookup has no canonical check of its own: it relies on this.
  Tlb tlb;
  std::byte page[4096];
  Translation translation{};
  translation.physical = 0x5000;
  translation.page_size = 4096;
  translation.dirty = true;
  translation.user = true;
  translation.writable = true;
  const PagingRegisters registers{};
  tlb.insert(0x0000800000000000, translation, registers, page);
  EXPECT_EQ(tlb.find(0x0000800000000000), nullptr);
  tlb.insert(0x00007ffffffff000, translation, registers, page);
  EXPECT_NE(tlb.find(0x00007ffffffff000), nullptr);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
