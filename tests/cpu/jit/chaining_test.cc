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
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, setup);
  const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 10'000'000, setup);
  expect_same(interpreted, translated);
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
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, setup);
  const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 10'000'000, setup);
  expect_same(interpreted, translated);
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 3u * kRounds);
  EXPECT_GT(translated.patched_exits, 0u);
  EXPECT_LT(translated.patched_exits, 20u);
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
