#pragma once
// Programs for JIT tests: guest code assembled with xbyak, run from kCode on a TestMachine in
// long mode on one engine (every exception vector to an HLT at kHandler), and the final state,
// retired count and JIT counters compared between the interpreter and the JIT.

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <vector>

#include <xbyak/xbyak.h>

#include "cpu/x86/jit/jit_engine.h"
#include "test_machine.h"

namespace lamina::cpu::x86::testing {

inline constexpr uint64_t kCode = 0x100000, kHandler = 0x110000, kData = 0x120000, kStackTop = 0x180000;

// Guest code assembled with xbyak: `body` writes it, the bytes are copied out.
inline std::vector<uint8_t> assemble(const std::function<void(Xbyak::CodeGenerator&)>& body) {
  Xbyak::CodeGenerator code(64 * 1024, Xbyak::DontSetProtectRWE);
  body(code);
  return {code.getCode(), code.getCode() + code.getSize()};
}

struct Outcome {
  CpuState state;
  uint64_t retired = 0;
  CpuExit::Kind exit = CpuExit::Kind::kBudgetExhausted;
  uint64_t stack_rip = 0;  // the RIP an exception frame pushed (error code below it)
  uint64_t stack_word = 0;  // the top of the stack (an exception frame's RIP without an error code)
  uint64_t translations = 0, flushes = 0, cache_used = 0, cache_capacity = 0, patched_exits = 0;
  uint64_t stub_entries = 0;
  std::vector<uint8_t> data;  // kDataBytes at kData when the run ended
};
inline constexpr uint64_t kDataBytes = 0x2000;

inline Outcome run_on(CpuEngine engine, const std::vector<uint8_t>& program, uint64_t cache_bytes = 1 << 20,
               uint64_t budget = 10'000'000,
               const std::function<void(TestMachine&)>& setup = {}) {
  EXPECT_LT(program.size(), kHandler - kCode) << "the program runs into the handler";
  CpuConfiguration configuration;
  configuration.engine = engine;
  configuration.code_cache_bytes = cache_bytes;
  TestMachine machine(16 << 20, configuration);
  machine.enter_long_mode(0);
  machine.write(kCode, program);
  const uint8_t halt[] = {0xf4};
  machine.write(kHandler, halt);
  for (uint8_t vector = 0; vector < 32; ++vector) machine.set_long_gate(vector, kHandler);
  CpuState& state = machine.state();
  state.rip = kCode;
  state.gpr[kRsp] = kStackTop;
  state.halted = false;
  if (setup) setup(machine);
  Outcome outcome;
  const CpuExit exit = machine.cpu().run(budget);
  outcome.exit = exit.kind;
  outcome.state = machine.state();
  outcome.retired = machine.cpu().instructions_retired();
  outcome.stack_rip = machine.read64(machine.state().gpr[kRsp] + 8);
  outcome.stack_word = machine.read64(machine.state().gpr[kRsp]);
  for (uint64_t offset = 0; offset < kDataBytes; ++offset) outcome.data.push_back(machine.read8(kData + offset));
  if (const jit::JitEngine* jit = machine.cpu().jit()) {
    outcome.translations = jit->translations();
    outcome.flushes = jit->cache().flushes();
    outcome.cache_used = jit->cache().used();
    outcome.cache_capacity = jit->cache().capacity();
    outcome.patched_exits = jit->patched_exits();
    outcome.stub_entries = jit->stub_entries();
  }
  return outcome;
}

inline void expect_same(const Outcome& interpreted, const Outcome& translated) {
  EXPECT_EQ(interpreted.exit, translated.exit);
  for (int index = 0; index < 16; ++index)
    EXPECT_EQ(interpreted.state.gpr[index], translated.state.gpr[index]) << "register " << index;
  EXPECT_EQ(interpreted.state.rip, translated.state.rip);
  EXPECT_EQ(interpreted.state.read_rflags(), translated.state.read_rflags());
  EXPECT_EQ(interpreted.state.cr2, translated.state.cr2);
  EXPECT_EQ(interpreted.retired, translated.retired);
  EXPECT_EQ(interpreted.stack_rip, translated.stack_rip);
  for (int index = 0; index < 16; ++index) {
    EXPECT_EQ(interpreted.state.simd.xmm[index].bytes, translated.state.simd.xmm[index].bytes) << "xmm" << index;
  }
  EXPECT_EQ(interpreted.state.simd.mxcsr, translated.state.simd.mxcsr);
  EXPECT_EQ(interpreted.data, translated.data);
}

// Both engines on `program` after `setup` (mappings or memory of the test's own): the same
// outcome; the JIT's returned.
inline Outcome compare_with(const std::vector<uint8_t>& program, const std::function<void(TestMachine&)>& setup) {
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program, 1 << 20, 10'000'000, setup);
  const Outcome translated = run_on(CpuEngine::kJit, program, 1 << 20, 10'000'000, setup);
  expect_same(interpreted, translated);
  return translated;
}

inline Outcome compare(const std::vector<uint8_t>& program, uint64_t cache_bytes = 1 << 20) {
  const Outcome interpreted = run_on(CpuEngine::kInterpreter, program);
  const Outcome translated = run_on(CpuEngine::kJit, program, cache_bytes);
  expect_same(interpreted, translated);
  EXPECT_GT(translated.translations, 0u);
  return translated;
}

// Ran to its final HLT without taking an exception (the handler is an HLT at kHandler).
inline void expect_no_exception(const Outcome& outcome) { EXPECT_NE(outcome.state.rip, kHandler + 1); }

}  // namespace lamina::cpu::x86::testing
