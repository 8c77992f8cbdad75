// Exit sites (jit/exit_site.h) between chained blocks check only their record and the budget,
// and write only the retired count: a posted request must still stop a chain at its next block
// boundary (it ends the budget: CpuCore::post_requests), the retired count must stay exact
// through patched exits, the chaining stub and long blocks, and a store into a block entered
// through a patched exit must still find it running (the handler stub sets running_block).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/jit/jit_engine.h"
#include "jit_test_program.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {
namespace {

using namespace Xbyak::util;

constexpr int kLongBlockLeas = 150;  // more than a block holds (64): blocks that fall through

// An endless chain of blocks of 5, 3, 2 and 2 instructions and a run of 152 that takes several
// blocks falling through into each other (a direct jump, a call and a return through the
// chaining stub). Every instruction but the jumps, calls and returns adds 1 to R8 or to the
// counter of its block (RAX, RBX, R9, R10, RCX), which comes right before the block's final
// jump: at any block boundary the instructions retired are R8 + 2 * (RAX + RBX + RCX + R9 + R10).
std::vector<uint8_t> counted_chain() {
  return assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label a, b, after_call, long_block, function;
    c.L(a);
    for (int i = 0; i < 3; ++i) c.lea(r8, ptr[r8 + 1]);
    c.inc(rax);
    c.jmp(b, Xbyak::CodeGenerator::T_NEAR);
    c.L(b);
    c.lea(r8, ptr[r8 + 1]);
    c.inc(rbx);
    c.call(function);
    c.L(after_call);
    c.inc(r10);
    c.jmp(long_block, Xbyak::CodeGenerator::T_NEAR);
    c.L(function);
    c.inc(r9);
    c.ret();
    c.L(long_block);
    for (int i = 0; i < kLongBlockLeas; ++i) c.lea(r8, ptr[r8 + 1]);
    c.inc(rcx);
    c.jmp(a, Xbyak::CodeGenerator::T_NEAR);
  });
}

uint64_t counted_instructions(const CpuState& state) {
  const auto& gpr = state.gpr;
  return gpr[kR8] + 2 * (gpr[kRax] + gpr[kRbx] + gpr[kRcx] + gpr[kR9] + gpr[kR10]);
}

TEST(JitExitSiteTest, TheRetiredCountStaysExactThroughChainedBlocks) {
  const std::vector<uint8_t> program = counted_chain();
  for (const uint64_t budget : {uint64_t{1000}, uint64_t{100'003}, uint64_t{777'777}}) {
    const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, budget);
    const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, budget);
    expect_same(interpreted, translated);
    EXPECT_EQ(translated.exit, CpuExit::Kind::kBudgetExhausted);
    EXPECT_EQ(translated.retired, counted_instructions(translated.state)) << "budget " << budget;
    EXPECT_GT(translated.patched_exits, 0u);
  }
}

TEST(JitExitSiteTest, AKickStopsAChainOfBlocksPromptly) {
  // Another thread kicks the vCPU while it runs the endless chain; each kick must end run()
  // long before the budget, at a block boundary with the retired count exact, and the next
  // run() must go on chaining.
  constexpr uint64_t kBudget = 20'000'000'000;
  CpuConfiguration configuration;
  configuration.engine = CpuEngine::kJit;
  TestMachine machine(16 << 20, configuration);
  machine.enter_long_mode(0);
  machine.write(kCode, counted_chain());
  machine.state().rip = kCode;
  machine.state().gpr[kRsp] = kStackTop;
  for (int round = 0; round < 3; ++round) {
    CpuExit exit;
    const auto start = std::chrono::steady_clock::now();
    {
      std::jthread poster([&machine] {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        machine.cpu().post(request::kKick);
      });
      exit = machine.cpu().run(kBudget);
    }
    EXPECT_EQ(exit.kind, CpuExit::Kind::kKicked) << "round " << round;
    EXPECT_LT(exit.instructions, kBudget);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
    EXPECT_EQ(machine.cpu().instructions_retired(), counted_instructions(machine.state())) << "round " << round;
  }
  ASSERT_NE(machine.cpu().jit(), nullptr);
  EXPECT_GT(machine.cpu().jit()->patched_exits(), 0u);
}

TEST(JitExitSiteTest, AStoreIntoABlockEnteredThroughAPatchedExitStopsIt) {
  // Z jumps through RAX to X1 or X2 in turn (one of them through the chaining stub, which
  // leaves Z as the core's running_block); both jump to Y on the next page through patched
  // exits, and Y back to Z. From round 5 on, Y stores the counter into the immediate of its
  // own MOV further on (before: into data). The store must find Y running, though no exit on
  // the way wrote running_block, and Y must then run the new immediate, as on the interpreter.
  const Outcome translated = compare(assemble([](Xbyak::CodeGenerator& c) {
    Xbyak::Label x1, x2, y, z, patched;
    c.mov(ecx, 20);
    c.xor_(ebx, ebx);
    c.jmp(z, Xbyak::CodeGenerator::T_NEAR);
    c.L(x1);
    c.inc(r9);
    c.jmp(y, Xbyak::CodeGenerator::T_NEAR);
    c.L(x2);
    c.inc(r10);
    c.jmp(y, Xbyak::CodeGenerator::T_NEAR);
    c.L(z);
    c.lea(rax, ptr[rip + x1]);
    c.lea(rdx, ptr[rip + x2]);
    c.test(cl, 1);
    c.cmovnz(rax, rdx);
    c.jmp(rax);
    c.align(4096);
    c.L(y);
    c.mov(edx, static_cast<uint32_t>(kData));
    c.lea(rsi, ptr[rip + patched + 1]);
    c.cmp(ecx, 5);
    c.cmove(rdx, rsi);
    c.mov(dword[rdx], ecx);
    c.L(patched);
    c.mov(eax, 1);
    c.add(ebx, eax);
    c.dec(ecx);
    c.jnz(z, Xbyak::CodeGenerator::T_NEAR);
    c.hlt();
  }));
  expect_no_exception(translated);
  EXPECT_EQ(translated.state.gpr[kRbx], 15u * 1 + 5u * 5);
  EXPECT_GT(translated.patched_exits, 0u);
}

// The last page of the lower canonical half: a Jcc within it needs no canonical check (its
// target is in the block's page), one past its end must still raise #GP at the Jcc, as the
// interpreter does, with the loop before it done.
TEST(JitExitSiteTest, AJccPastTheLastCanonicalPageRaisesGp) {
  constexpr uint64_t kTop = 0x00007ffffffff000, kTopPhysical = 0x130000;
  uint64_t jz = 0;  // the JZ's address
  const std::vector<uint8_t> program = assemble([](Xbyak::CodeGenerator& c) {
    c.mov(rax, kTop + 0x800);
    c.jmp(rax);
  });
  const auto setup = [&jz](TestMachine& machine) {
    machine.map_page(kTop, kTopPhysical, false, true);
    // At kTop + 0x800: a loop of 20 rounds within the page, then a JZ taken to
    // 0x0000800000000000 + 0x10, which is not canonical.
    machine.write(kTopPhysical + 0x800, assemble([&jz](Xbyak::CodeGenerator& c) {
      Xbyak::Label loop;
      c.mov(ecx, 20);
      c.L(loop);
      c.add(rbx, 2);
      c.dec(ecx);
      c.jnz(loop, Xbyak::CodeGenerator::T_NEAR);
      c.xor_(eax, eax);
      // jz rel32 to kTop + 0x1010, 6 bytes from here.
      jz = kTop + 0x800 + c.getSize();
      const auto relative = static_cast<uint32_t>(kTop + 0x1010 - (jz + 6));
      c.db(0x0f), c.db(0x84);
      for (int shift = 0; shift < 32; shift += 8) c.db(static_cast<uint8_t>(relative >> shift));
      c.hlt();
    }));
  };
  const Outcome translated = compare_with(program, setup);
  EXPECT_EQ(translated.state.rip, kHandler + 1);
  EXPECT_EQ(translated.state.gpr[kRbx], 40u);
  EXPECT_EQ(translated.stack_rip, jz);  // #GP is a fault: the JZ's own address
  EXPECT_GT(translated.translations, 0u);
}

}  // namespace
}  // namespace lamina::cpu::x86::testing
