// Chaining across address-space changes: links, jump cache entries and patched exits to code
// on global pages (CR4.PGE, PTE.G) outlive a CR3 load, as the TLB's global entries do; those
// to other code, and every link after INVLPG of its page or a CR4.PGE toggle, must not. Each
// program runs on the interpreter and the JIT, which must end in the same state.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/cpu_state.h"
#include "cpu/x86/jit/jit_engine.h"
#include "cpu/x86/system/control_bits.h"
#include "jit_test_program.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;

constexpr uint64_t kFunction = 0x40000000, kFirst = 0x130000, kSecond = 0x140000;
constexpr uint64_t kGlobalBit = uint64_t{1} << 8;  // PTE.G (SDM vol. 3A, table 4-19)

// The page-table entry that maps `linear` in `machine` (4 KiB pages, as TestMachine maps).
uint64_t pte_of(TestMachine& machine, uint64_t linear) {
  uint64_t table = machine.state().cr3 & ~uint64_t{0xfff};
  for (int level = 3; level > 0; --level)
    table = machine.read64(table + ((linear >> (12 + 9 * level)) & 511) * 8) & 0x000ffffffffff000ull;
  return table + ((linear >> 12) & 511) * 8;
}

uint64_t pte_address(uint64_t linear, uint64_t physical) {
  TestMachine machine;
  machine.enter_long_mode(0);
  machine.map_page(linear, physical, false, true);
  return pte_of(machine, linear);
}

void jump_to(Xbyak::CodeGenerator& c, uint64_t from, uint64_t to) {
  const auto relative = static_cast<uint32_t>(to - (from + 5));
  c.db(0xe9);
  for (int shift = 0; shift < 32; shift += 8) c.db(static_cast<uint8_t>(relative >> shift));
}

// xbyak has no control-register or INVLPG forms: their encodings (SDM vol. 2).
void reload_cr3(Xbyak::CodeGenerator& c) {
  c.db(0x0f), c.db(0x20), c.db(0xd8);  // mov rax, cr3
  c.db(0x0f), c.db(0x22), c.db(0xd8);  // mov cr3, rax
}

enum class Remap { kCr3Reload, kInvlpg, kPgeToggle };

// Which pages are global (PTE.G, with CR4.PGE on): the program's code page, the function's.
struct Globals {
  bool code = true;
  bool function = false;
};

void set_up_global_pages(TestMachine& machine, Globals globals) {
  machine.map_page(kFunction, kFirst, false, true);
  for (const auto& [linear, global] : {std::pair{kCode, globals.code}, std::pair{kFunction, globals.function}}) {
    const uint64_t pte = pte_of(machine, linear);
    if (global) machine.write64(pte, machine.read64(pte) | kGlobalBit);
  }
  machine.state().cr4 |= cr4::kPge;
  machine.cpu().state_changed();
}

// The function's page mapped to kSecond through its PTE at `pte`, made visible by `remap`.
void remap_function_page(Xbyak::CodeGenerator& c, uint64_t pte, Remap remap, Globals globals) {
  c.mov(rdx, pte);
  c.mov(rax, kSecond | 3 | (globals.function ? kGlobalBit : 0));
  c.mov(qword[rdx], rax);
  switch (remap) {
    case Remap::kCr3Reload: reload_cr3(c); break;
    case Remap::kInvlpg:
      c.mov(rax, kFunction);
      c.db(0x0f), c.db(0x01), c.db(0x38);  // invlpg [rax]
      break;
    case Remap::kPgeToggle:
      c.db(0x0f), c.db(0x20), c.db(0xe0);  // mov rax, cr4
      c.btr(rax, 7);
      c.db(0x0f), c.db(0x22), c.db(0xe0);  // mov cr4, rax
      c.bts(rax, 7);
      c.db(0x0f), c.db(0x22), c.db(0xe0);  // mov cr4, rax
      break;
  }
}

// Runs `program` on both engines: the same end, and both rounds of 50 calls (the first
// function's 1, the second's 2) through patched exits the remapping made stale.
void expect_the_new_code_ran(const std::vector<uint8_t>& program,
                             const std::function<void(TestMachine&)>& setup) {
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 50u * 1 + 50u * 2);
  EXPECT_GT(translated.patched_exits, 0u);
}

// Block A (on a global page) jumps straight into a function, whose block jumps straight
// back: both exits are patched. Then the function's page is mapped to other code and `remap`
// makes that visible; A must run the new code.
void remapped_target_runs_the_new_code(Remap remap, Globals globals) {
  const uint64_t pte = pte_address(kFunction, kFirst);
  uint64_t back = 0;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label outer, inner, skip;
    c.mov(r8d, 2);
    c.L(outer);
    c.mov(ecx, 50);
    c.L(inner);
    c.inc(r9);
    jump_to(c, kCode + c.getSize(), kFunction);
    back = kCode + c.getSize();
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(inner, Xbyak::CodeGenerator::T_NEAR);
    c.cmp(r8d, 2);
    c.jne(skip, Xbyak::CodeGenerator::T_NEAR);
    remap_function_page(c, pte, remap, globals);
    c.L(skip);
    c.dec(r8d);
    c.jnz(outer, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    set_up_global_pages(machine, globals);
    for (const auto& [physical, value] : {std::pair{kFirst, 1}, std::pair{kSecond, 2}}) {
      // mov eax, value; jmp back
      machine.write(physical, assemble([&](Xbyak::CodeGenerator& c) {
        c.mov(eax, value);
        jump_to(c, kFunction + c.getSize(), back);
      }));
    }
  };
  expect_the_new_code_ran(program, setup);
}

TEST(ChainingTest, ACr3ReloadRetiresLinksToANonGlobalPageFromGlobalCode) {
  remapped_target_runs_the_new_code(Remap::kCr3Reload, {.code = true, .function = false});
}

TEST(ChainingTest, ACr3ReloadRetiresLinksBetweenNonGlobalPages) {
  remapped_target_runs_the_new_code(Remap::kCr3Reload, {.code = false, .function = false});
}

TEST(ChainingTest, InvlpgRetiresLinksToANonGlobalPage) {
  remapped_target_runs_the_new_code(Remap::kInvlpg, {.code = false, .function = false});
}

TEST(ChainingTest, InvlpgRetiresLinksToAGlobalPage) {
  remapped_target_runs_the_new_code(Remap::kInvlpg, {.code = true, .function = true});
}

TEST(ChainingTest, ACr4PgeToggleRetiresLinksToAGlobalPage) {
  remapped_target_runs_the_new_code(Remap::kPgeToggle, {.code = true, .function = true});
}

// The same indirect way (CALL through a register, RET: the jump cache) to the function, whose
// page is then mapped to other code and `remap` makes that visible.
void remapped_function_runs_the_new_code(Remap remap, Globals globals) {
  const uint64_t pte = pte_address(kFunction, kFirst);
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    for (int phase = 0; phase < 2; ++phase) {
      Xbyak::Label loop;
      c.mov(ecx, 50);
      c.L(loop);
      c.mov(rax, kFunction);
      c.call(rax);
      c.add(rbx, rax);
      c.dec(ecx);
      c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
      if (phase == 0) {
        remap_function_page(c, pte, remap, globals);
      }
    }
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    set_up_global_pages(machine, globals);
    const uint8_t first[] = {0xb8, 1, 0, 0, 0, 0xc3};   // mov eax, 1; ret
    const uint8_t second[] = {0xb8, 2, 0, 0, 0, 0xc3};  // mov eax, 2; ret
    machine.write(kFirst, first);
    machine.write(kSecond, second);
  };
  expect_the_new_code_ran(program, setup);
}

TEST(ChainingTest, ACr3ReloadRetiresJumpCacheEntriesOfANonGlobalPage) {
  remapped_function_runs_the_new_code(Remap::kCr3Reload, {.code = true, .function = false});
}

TEST(ChainingTest, ACr3ReloadRetiresJumpCacheEntriesBetweenNonGlobalPages) {
  remapped_function_runs_the_new_code(Remap::kCr3Reload, {.code = false, .function = false});
}

TEST(ChainingTest, InvlpgRetiresJumpCacheEntriesOfItsPage) {
  remapped_function_runs_the_new_code(Remap::kInvlpg, {.code = false, .function = false});
}

// A loop through a function on a global page that reloads CR3 every round: the patched exits
// between global code hold, so exits are patched a few times in all, not every round.
TEST(ChainingTest, PatchedExitsBetweenGlobalPagesOutliveCr3Reloads) {
  constexpr int kRounds = 200;
  uint64_t back = 0;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(ecx, kRounds);
    c.L(loop);
    c.inc(r9);
    jump_to(c, kCode + c.getSize(), kFunction);
    back = kCode + c.getSize();
    c.add(rbx, rax);
    reload_cr3(c);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    set_up_global_pages(machine, {.code = true, .function = true});
    machine.write(kFirst, assemble([&](Xbyak::CodeGenerator& c) {
      c.mov(eax, 3);
      jump_to(c, kFunction + c.getSize(), back);
    }));
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 3u * kRounds);
  EXPECT_GT(translated.patched_exits, 0u);
  EXPECT_LT(translated.patched_exits, 20u);
  // Every round after the first few takes the patched jumps between the pages (the exits
  // compare RIP there): the chaining stub runs only where the budget or a new patch sends it,
  // and for the CR3 load's own block (a handler ends it).
  EXPECT_LT(translated.stub_entries, 40u);
}

// A loop over two pages whose exits into each other compare RIP (not same-page) follows the
// patched jumps: the chaining stub sees only the first rounds (its generation, the RIP and
// the budget patched into the exit's own code, exit_site.h).
TEST(ChainingTest, PatchedExitsBetweenPagesSkipTheChainingStub) {
  constexpr int kRounds = 500;
  uint64_t back = 0;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(ecx, kRounds);
    c.L(loop);
    c.inc(r9);
    jump_to(c, kCode + c.getSize(), kFunction);
    back = kCode + c.getSize();
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    set_up_global_pages(machine, {.code = true, .function = true});
    machine.write(kFirst, assemble([&](Xbyak::CodeGenerator& c) {
      c.mov(eax, 3);
      jump_to(c, kFunction + c.getSize(), back);
    }));
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 3u * kRounds);
  EXPECT_GT(translated.patched_exits, 0u);
  EXPECT_LT(translated.stub_entries, 20u);
}

// Direct exits within one non-global page (a jump to the same page) are patched under the
// global generation: a loop whose every round reloads CR3 patches them a few times in all, not
// every round (with the address space's generation, three exits a round).
TEST(ChainingTest, PatchedExitsWithinAPageOutliveCr3Reloads) {
  constexpr int kRounds = 200;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, second, third;
    c.mov(ecx, kRounds);
    c.L(loop);
    c.inc(r9);
    c.jmp(second, Xbyak::CodeGenerator::T_NEAR);
    c.L(second);
    c.add(rbx, 3);
    c.jmp(third, Xbyak::CodeGenerator::T_NEAR);
    c.L(third);
    reload_cr3(c);  // ends its block
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program);
  const Outcome translated = run_on(CpuEngine::kJit, program);
  expect_same(interpreted, translated);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 3u * kRounds);
  EXPECT_GT(translated.patched_exits, 0u);
  EXPECT_LT(translated.patched_exits, 20u);
}

// Two linear pages, kLow and kHigh = kLow + 4 KiB, whose PTEs are adjacent (one page table):
// kHigh maps kFirst, kLow kCode's page (unused), until the program remaps them.
constexpr uint64_t kLow = 0x50000000, kHigh = kLow + 0x1000;

uint64_t low_pte_address() {
  TestMachine machine;
  machine.enter_long_mode(0);
  machine.map_page(kLow, kCode, false, true);
  machine.map_page(kHigh, kFirst, false, true);
  return pte_of(machine, kLow);
}

void map_low_and_high(TestMachine& machine) {
  machine.map_page(kLow, kCode, false, true);
  machine.map_page(kHigh, kFirst, false, true);
}

// Maps kLow to `low` and kHigh to `high` (physical pages) and reloads CR3.
void switch_address_space(Xbyak::CodeGenerator& c, uint64_t pte, uint64_t low, uint64_t high) {
  c.mov(rdx, pte);
  c.mov(rax, low | 3);
  c.mov(qword[rdx], rax);
  c.mov(rax, high | 3);
  c.mov(qword[rdx + 8], rax);
  reload_cr3(c);
}

// A: a jump within kHigh's page to B, which jumps back through R11. After 50 rounds the page
// maps other code (B' at B's offset) and CR3 is reloaded; then kCode jumps to B's address
// through a register 50 times. The same-page exit A -> B is patched under the global
// generation, but the jump cache entry its chaining made must not be: B's address is B' now.
TEST(ChainingTest, AJumpCacheEntryOfASamePageExitDiesWithItsAddressSpace) {
  constexpr uint64_t kB = kHigh + 0x100;
  const uint64_t pte = low_pte_address();
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label first, second;
    c.mov(ecx, 50);
    c.L(first);
    c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
    jump_to(c, kCode + c.getSize(), kHigh);
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(first, Xbyak::CodeGenerator::T_NEAR);
    switch_address_space(c, pte, kCode, kSecond);
    c.mov(ecx, 50);
    c.L(second);
    c.mov(rdx, kB);
    c.lea(r11, ptr[rip + 2]);
    c.jmp(rdx);
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(second, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    map_low_and_high(machine);
    for (const auto& [physical, value] : {std::pair{kFirst, 1}, std::pair{kSecond, 2}}) {
      machine.write(physical, assemble([&](Xbyak::CodeGenerator& c) {
        Xbyak::Label b;
        c.inc(r9);  // A
        c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
        c.align(0x100);
        c.L(b);
        c.mov(eax, value);
        c.jmp(r11);
      }));
    }
  };
  expect_the_new_code_ran(program, setup);
}

TEST(ChainingTest, ASamePageExitSeesACodeWriteAfterACr3Reload) {
  // One loop of 150 rounds: its block jumps to A, A to B within kHigh's page, B back through
  // R11. After 50 rounds CR3 is reloaded (the loop's exit to A is patched again), after 100
  // B's immediate is rewritten through kHigh: A and B are dropped, and the patches to them
  // (the loop's to A, A's same-page one to B) must not be followed.
  constexpr uint64_t kImmediate = kHigh + 0x100 + 1;  // mov eax, imm32 at B
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, no_reload, no_write;
    c.mov(ecx, 150);
    c.L(loop);
    c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
    jump_to(c, kCode + c.getSize(), kHigh);
    c.add(rbx, rax);
    c.cmp(ecx, 101);
    c.jne(no_reload, Xbyak::CodeGenerator::T_NEAR);
    reload_cr3(c);
    c.L(no_reload);
    c.cmp(ecx, 51);
    c.jne(no_write, Xbyak::CodeGenerator::T_NEAR);
    c.mov(rdx, kImmediate);
    c.mov(dword[rdx], 2);
    c.L(no_write);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    map_low_and_high(machine);
    machine.write(kFirst, assemble([&](Xbyak::CodeGenerator& c) {
      Xbyak::Label b;
      c.inc(r9);  // A
      c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
      c.align(0x100);
      c.L(b);
      c.mov(eax, 1);
      c.jmp(r11);
    }));
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 100u * 1 + 50u * 2);
  EXPECT_GT(translated.patched_exits, 0u);
}

// A, at kHigh, writes kHigh's PTE from R10 and INVLPGs kHigh every round, then jumps to B in
// the same page: its exit is patched under the global generation. In round 50 R10 maps
// kHigh to other code; A's decoded instructions go on, and its jump must reach the new B.
TEST(ChainingTest, AnInvlpgInsideABlockRetiresItsSamePageExit) {
  const uint64_t pte = low_pte_address() + 8;  // kHigh's
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, keep;
    c.mov(ecx, 100);
    c.mov(r10, kFirst | 3);
    c.L(loop);
    c.cmp(ecx, 51);
    c.jne(keep, Xbyak::CodeGenerator::T_NEAR);
    c.mov(r10, kSecond | 3);
    c.L(keep);
    c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
    jump_to(c, kCode + c.getSize(), kHigh);
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    map_low_and_high(machine);
    for (const auto& [physical, value] : {std::pair{kFirst, 1}, std::pair{kSecond, 2}}) {
      machine.write(physical, assemble([&](Xbyak::CodeGenerator& c) {
        Xbyak::Label b;
        c.mov(rdx, pte);  // A
        c.mov(qword[rdx], r10);
        c.mov(rax, kHigh);
        c.db(0x0f), c.db(0x01), c.db(0x38);  // invlpg [rax]
        c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
        c.align(0x100);
        c.L(b);
        c.mov(eax, value);
        c.jmp(r11);
      }));
    }
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 49u * 1 + 51u * 2);
  EXPECT_GT(translated.patched_exits, 0u);
}

// The same code page at two addresses in turn (a shared library in two processes): A jumps to
// B within it, patched under the global generation for the first address; its patch holds at
// the second too (a same-page exit compares no RIP) and must reach the same B there, then at
// the first once more.
TEST(ChainingTest, ASamePageExitAtAnotherAddressReachesTheSameSuccessor) {
  const uint64_t pte = low_pte_address();
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    for (int phase = 0; phase < 3; ++phase) {
      Xbyak::Label loop;
      c.mov(ecx, 30);
      c.L(loop);
      c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
      jump_to(c, kCode + c.getSize(), phase == 1 ? kLow : kHigh);
      c.add(rbx, rax);
      c.dec(ecx);
      c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
      // kFirst at kLow (kHigh: kSecond), then back at kHigh.
      if (phase == 0) switch_address_space(c, pte, kFirst, kSecond);
      if (phase == 1) switch_address_space(c, pte, kCode, kFirst);
    }
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    map_low_and_high(machine);
    for (const auto& [physical, value] : {std::pair{kFirst, 1}, std::pair{kSecond, 7}}) {
      machine.write(physical, assemble([&](Xbyak::CodeGenerator& c) {
        Xbyak::Label b;
        c.inc(r9);  // A
        c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
        c.align(0x100);
        c.L(b);
        c.mov(eax, value);
        c.jmp(r11);
      }));
    }
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 90u);
  EXPECT_GT(translated.patched_exits, 0u);
}

// One code page mapped at kLow and kHigh at once (one address space): each round runs A at
// both. A jumps to B within the page (a same-page exit, which compares no RIP: its patch holds
// at either address), B adds its own address (LEA of RIP) to RBX: RIP past the patched jump
// must be the alias's. The exit is patched once, not again at each address.
TEST(ChainingTest, ASamePageExitHoldsAtEveryAddressOfItsPage) {
  constexpr int kRounds = 60;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop;
    c.mov(ecx, kRounds);
    c.L(loop);
    for (const uint64_t alias : {kLow, kHigh}) {
      c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
      jump_to(c, kCode + c.getSize(), alias);
    }
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    machine.map_page(kLow, kFirst, false, true);
    machine.map_page(kHigh, kFirst, false, true);
    machine.write(kFirst, assemble([&](Xbyak::CodeGenerator& c) {
      Xbyak::Label b;
      c.inc(r9);  // A
      c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
      c.align(0x100);
      c.L(b);
      c.lea(rax, ptr[rip]);  // B at 0x100: RAX = its address + 7
      c.add(rbx, rax);
      c.jmp(r11);
    }));
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], kRounds * (kLow + 0x107 + kHigh + 0x107));
  EXPECT_GT(translated.patched_exits, 0u);
  EXPECT_LT(translated.patched_exits, 10u);
}

// A's same-page jump leads to B, whose one instruction (MOV EAX, imm32) crosses into the next
// page (kSecond): B's block does not lie in A's page, so A's exit may not be patched under the
// global generation (JitEngine::same_page_successor) and has no RIP compare: it finds B
// through links and the jump cache every time (look_up_only). In round 50 the immediate's
// last byte, in kSecond, is rewritten: B is dropped and the new value must be seen.
TEST(ChainingTest, ASamePageExitToABlockAcrossItsPageEndIsLookedUp) {
  constexpr uint64_t kB = 0xffc;  // B's offset in A's page: MOV EAX, imm32 ends at 0x1001
  constexpr uint64_t kNext = kHigh + 0x1000;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, same;
    c.mov(ecx, 100);
    c.L(loop);
    c.cmp(ecx, 50);
    c.jne(same, Xbyak::CodeGenerator::T_NEAR);
    c.mov(rdx, kNext);
    c.mov(byte[rdx], 0x02);
    c.L(same);
    c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
    jump_to(c, kCode + c.getSize(), kHigh);
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    machine.map_page(kHigh, kFirst, false, true);
    machine.map_page(kNext, kSecond, false, true);
    // A: inc r9; jmp rel32 to B.
    std::vector<uint8_t> a = {0x49, 0xff, 0xc1, 0xe9};
    const auto relative = static_cast<uint32_t>(kB - 8);
    for (int i = 0; i < 4; ++i) a.push_back(static_cast<uint8_t>(relative >> (8 * i)));
    machine.write(kFirst, a);
    const uint8_t b[] = {0xb8, 0x01, 0x00, 0x00};  // mov eax, 0x??000001: its last byte next page
    machine.write(kFirst + kB, b);
    const uint8_t next[] = {0x00, 0x41, 0xff, 0xe3};  // the immediate's last byte; jmp r11
    machine.write(kSecond, next);
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 50u * 1 + 50u * 0x02000001);
  EXPECT_GT(translated.patched_exits, 0u);
}

// Blocks are found by their first page. B's last instruction (MOV EAX, imm32) runs into the
// next page, which round 50 maps to another physical page (its PTE rewritten, CR3 reloaded):
// B must not run on with the old page's byte, on either engine (the interpreter is no oracle
// here: both find blocks the same way, so the sum is checked as such). The next page first
// maps to `next_physical`: another page, or B's own (then B's last page equals its first, and
// only its bytes tell that it crosses the page end). The remap is made known by a CR3 load or
// by an INVLPG of the next page alone (`invlpg`): then the links and jump cache entries that
// lead to B must die with it (BlockCache::note_linked marks B's next page).
void block_across_a_page_end_sees_its_next_page_remapped(uint64_t next_physical, bool invlpg = false) {
  constexpr uint64_t kA = 0x100, kB = 0xffc;
  constexpr uint64_t kNext = kHigh + 0x1000;
  constexpr uint64_t kThird = 0x150000;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, same;
    c.mov(ecx, 100);
    c.L(loop);
    c.cmp(ecx, 50);
    c.jne(same, Xbyak::CodeGenerator::T_NEAR);
    // r12: the next page's PTE (setup); next_physical -> kThird.
    c.mov(rax, qword[r12]);
    c.mov(rdx, next_physical ^ kThird);
    c.xor_(rax, rdx);
    c.mov(qword[r12], rax);
    if (invlpg) {
      c.mov(rax, kNext);
      c.db(0x0f), c.db(0x01), c.db(0x38);  // invlpg [rax]
    } else {
      reload_cr3(c);
    }
    c.L(same);
    c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
    jump_to(c, kCode + c.getSize(), kHigh + kA);
    c.add(rbx, rax);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    machine.map_page(kHigh, kFirst, false, true);
    machine.map_page(kNext, next_physical, false, true);
    // A: inc r9; jmp rel32 to B.
    std::vector<uint8_t> a = {0x49, 0xff, 0xc1, 0xe9};
    const auto relative = static_cast<uint32_t>(kB - (kA + 8));
    for (int i = 0; i < 4; ++i) a.push_back(static_cast<uint8_t>(relative >> (8 * i)));
    machine.write(kFirst + kA, a);
    const uint8_t b[] = {0xb8, 0x01, 0x00, 0x00};  // mov eax, 0x??000001: its last byte next page
    machine.write(kFirst + kB, b);
    const uint8_t old_next[] = {0x00, 0x41, 0xff, 0xe3};  // the immediate's last byte; jmp r11
    const uint8_t new_next[] = {0x02, 0x41, 0xff, 0xe3};
    machine.write(next_physical, old_next);
    machine.write(kThird, new_next);
    machine.state().gpr[kR12] = pte_of(machine, kNext);
    machine.cpu().state_changed();
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 50u * 1 + 50u * 0x02000001);
  EXPECT_EQ(translated.state.gpr[kR9], 100u);
}

TEST(ChainingTest, ABlockAcrossAPageEndSeesItsNextPageRemapped) {
  block_across_a_page_end_sees_its_next_page_remapped(kSecond);
}

TEST(ChainingTest, ABlockAcrossAPageEndOntoItsOwnPageSeesItsNextPageRemapped) {
  block_across_a_page_end_sees_its_next_page_remapped(kFirst);
}

TEST(ChainingTest, ABlockAcrossAPageEndSeesItsNextPageRemappedByInvlpg) {
  block_across_a_page_end_sees_its_next_page_remapped(kSecond, true);
}

TEST(ChainingTest, ABlockAcrossAPageEndOntoItsOwnPageSeesItsNextPageRemappedByInvlpg) {
  block_across_a_page_end_sees_its_next_page_remapped(kFirst, true);
}

// Block A on a global page jumps to a function on another global page, patched under the
// global generation. In round 50 CR3 is reloaded and the function's immediate rewritten at
// once: nothing of the new address space leads to the function yet, but A's patch, which
// holds in every address space, does, so its drop must start a new epoch.
TEST(ChainingTest, ACodeWriteAfterACr3ReloadRetiresAGlobalPatch) {
  uint64_t back = 0;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    Xbyak::Label loop, skip;
    c.mov(ecx, 100);
    c.L(loop);
    c.inc(r9);
    jump_to(c, kCode + c.getSize(), kFunction);
    back = kCode + c.getSize();
    c.add(rbx, rax);
    c.cmp(ecx, 51);
    c.jne(skip, Xbyak::CodeGenerator::T_NEAR);
    reload_cr3(c);
    c.mov(rdx, kFunction + 1);  // mov eax, imm32's immediate
    c.mov(dword[rdx], 2);
    c.L(skip);
    c.dec(ecx);
    c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    set_up_global_pages(machine, {.code = true, .function = true});
    machine.write(kFirst, assemble([&](Xbyak::CodeGenerator& c) {
      c.mov(eax, 1);
      jump_to(c, kFunction + c.getSize(), back);
    }));
  };
  const Outcome translated = compare_with(program, setup);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 50u * 1 + 50u * 2);
  EXPECT_GT(translated.patched_exits, 0u);
}

// A ends at the last byte of its page with a Jcc to the page's start (a same-page exit) and
// falls through into the next page. 50 rounds taken at kHigh (B at kHigh returns 1); then the
// page is mapped at kLow too, kHigh to other code (returning 2), CR3 reloaded, and A runs at
// kLow 50 times not taken: its fall-through reaches kHigh, the RIP the taken exit's link was
// made for. The link (shared by both exits) must not outlive the address space.
TEST(ChainingTest, ALinkOfASamePageExitDiesWithItsAddressSpace) {
  const uint64_t pte = low_pte_address();
  constexpr uint64_t kA = 0xff0;  // A's offset in its page
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    for (int phase = 0; phase < 2; ++phase) {
      Xbyak::Label loop;
      c.mov(ecx, 50);
      c.mov(r10d, phase == 0 ? 1 : 0);
      c.L(loop);
      c.lea(r11, ptr[rip + 5]);  // past the rel32 jump
      jump_to(c, kCode + c.getSize(), (phase == 0 ? kHigh : kLow) + kA);
      c.add(rbx, rax);
      c.dec(ecx);
      c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
      if (phase == 0) switch_address_space(c, pte, kFirst, kSecond);
    }
    c.hlt();
  });
  const auto setup = [&](TestMachine& machine) {
    map_low_and_high(machine);
    for (const auto& [physical, value] : {std::pair{kFirst, 1}, std::pair{kSecond, 2}}) {
      machine.write(physical, assemble([&](Xbyak::CodeGenerator& c) {
        c.mov(eax, value);  // at the page's start
        c.jmp(r11);
      }));
    }
    // A at kA: test r10d, r10d (3 bytes); jnz rel32 to the page's start (6 bytes), ending at
    // 0xff9; NOPs before it so that it ends at the page's end.
    std::vector<uint8_t> a(0x1000 - kA, 0x90);
    const size_t jcc = a.size() - 6;
    a[jcc - 3] = 0x45, a[jcc - 2] = 0x85, a[jcc - 1] = 0xd2;  // test r10d, r10d
    const auto relative = static_cast<uint32_t>(-static_cast<int64_t>(0x1000));
    a[jcc] = 0x0f, a[jcc + 1] = 0x85;
    for (int i = 0; i < 4; ++i) a[jcc + 2 + i] = static_cast<uint8_t>(relative >> (8 * i));
    machine.write(kFirst + kA, a);
  };
  expect_the_new_code_ran(program, setup);
}

// SYSRET sets TF from R11 in the sixth round, in the same translated block as the rounds
// before: the #DB trap must come after the first user instruction. (SYSRET ends its block
// today; a handler that chained on with TF set would be ended by the handler stub's check.)
TEST(ChainingTest, TfSetBySysretTrapsAfterTheFirstUserInstruction) {
  constexpr uint64_t kUser = kCode + 0x400;
  const std::vector<uint8_t> program = assemble([&](Xbyak::CodeGenerator& c) {
    c.inc(r8);  // the kernel's entry (LSTAR): count the rounds
    // RFLAGS for SYSRET, in the same block every round: TF from the sixth round on.
    c.xor_(r11d, r11d);
    c.cmp(r8d, 6);
    c.setae(r11b);
    c.shl(r11d, 8);
    c.or_(r11d, 2);
    c.mov(rcx, kUser);
    c.db(0x48), c.db(0x0f), c.db(0x07);  // o64 sysret
    c.align(0x400);
    c.inc(rbx);  // the user code at kUser
    c.db(0x0f), c.db(0x05);  // syscall
  });
  const auto setup = [](TestMachine& machine) {
    CpuState& state = machine.state();
    state.msr.lstar = kCode;
    state.msr.star = (uint64_t{0x13} << 48) | (uint64_t{0x08} << 32);
    state.msr.sfmask = rflags::kTf | rflags::kIf;
    // The #DB from CPL 3 switches to RSP0.
    machine.write64(TestMachine::kTss + 4, kStackTop);
  };
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, 100'000, setup);
  const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 100'000, setup);
  expect_same(interpreted, translated);
  EXPECT_EQ(translated.exit, CpuExit::Kind::kHalted);
  EXPECT_EQ(translated.state.rip, kHandler + 1);
  EXPECT_EQ(translated.state.gpr[kRbx], 6u);
  EXPECT_EQ(translated.stack_word, kUser + 3);  // the #DB trap's RIP: after the first INC
  EXPECT_GT(translated.translations, 0u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
