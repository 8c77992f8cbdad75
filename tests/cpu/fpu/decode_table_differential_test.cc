// Differential test of the decode tables: for every (map, opcode, mandatory prefix) that
// simd_opcode_info() claims, in register and memory form, the host CPU raises #UD (SIGILL)
// exactly when the unit answers kInvalidOpcode, and #GP (SIGSEGV) exactly when it answers
// kGeneralProtection.

#include <gtest/gtest.h>

#include <csignal>

#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/simd/simd_unit.h"
#include "host_runner.h"
#include "test_support.h"

namespace lamina::cpu::x86::test {
namespace {

SimdState state_for_host() {
  SimdState state;
  reset(state);
  return state;
}

TEST(DecodeTableDifferential, UndefinedFormsMatchTheHost) {
  HostRunner runner;
  int checked = 0;
  int failures = 0;
  auto check = [&](OpcodeMap map, uint8_t opcode, uint8_t prefix) {
    SimdOpcodeInfo info = simd_opcode_info(map, opcode, prefix);
    if (!info.handled) return;
    for (unsigned variant = 0; variant < 32 && failures < 20; ++variant) {
      InstructionForm form;
      form.map = map;
      form.opcode = opcode;
      form.prefix = prefix;
      form.memory = variant & 1;
      form.rex_w = variant & 2;
      form.reg = static_cast<uint8_t>(variant >> 2);  // 0-7: also the 0F 71-73 and AE groups
      // ModRM.reg 4-7 only where it selects an operation: elsewhere it may name a general
      // register, and rsp, rsi and rdi belong to the stub.
      bool group =
          map == OpcodeMap::kTwoByte && ((opcode >= 0x71 && opcode <= 0x73) || opcode == 0xae);
      if (form.reg >= 4 && !group) continue;
      form.rm = 2;
      if (info.has_immediate) form.immediate = 1;
      if (map == OpcodeMap::kTwoByte && opcode == 0xae && form.memory && form.reg >= 4) continue;
      Encoded encoded = encode(form);
      if (!info.has_modrm) {
        // EMMS: no ModRM byte (nor REX, nor variants).
        if (variant != 0) continue;
        encoded.bytes.pop_back();
      }
      SimdState state;
      reset(state);
      TestOperands operands;
      operands.gpr[1] = 1;
      operands.gpr[2] = 2;
      SimdControl control;
      SimdOutcome outcome = execute_simd(state, control, encoded.instruction, operands);
      if (outcome == SimdOutcome::kNotSimd) continue;
      HostMachine machine;
      SimdState initial;
      reset(initial);
      state_to_fxsave(initial, machine.fxsave);
      machine.gpr = {0, 1, 2};
      alignas(64) std::array<uint8_t, kTestMemorySize> memory{};
      runner.run(encoded.bytes, machine, memory.data());
      bool host_undefined = runner.last_signal() == SIGILL;
      bool host_protection = runner.last_signal() == SIGSEGV;
      bool unit_undefined = outcome == SimdOutcome::kInvalidOpcode;
      bool unit_protection = outcome == SimdOutcome::kGeneralProtection;
      ++checked;
      if (host_undefined != unit_undefined || host_protection != unit_protection) {
        ADD_FAILURE() << "map " << static_cast<int>(map) << " opcode " << std::hex << int{opcode}
                      << " prefix " << int{prefix} << " memory " << form.memory << " rex.w "
                      << form.rex_w << " reg " << int{form.reg} << ": host signal " << std::dec
                      << runner.last_signal() << ", unit outcome " << static_cast<int>(outcome);
        ++failures;
      }
    }
  };
  for (OpcodeMap map : {OpcodeMap::kTwoByte, OpcodeMap::kThreeByte38, OpcodeMap::kThreeByte3A}) {
    for (unsigned opcode = 0; opcode < 256; ++opcode) {
      // MASKMOVQ/MASKMOVDQU store through rdi, which the host stub owns.
      if (map == OpcodeMap::kTwoByte && opcode == 0xf7) continue;
      for (uint8_t prefix : {0, 0x66, 0xf2, 0xf3}) {
        // F2/F3 0F 2B are SSE4a (MOVNTSD/MOVNTSS) on AMD hosts; the unit has no SSE4a.
        bool sse4a = map == OpcodeMap::kTwoByte && opcode == 0x2b && prefix >= 0xf2;
        if (!sse4a) check(map, static_cast<uint8_t>(opcode), prefix);
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

// The x87 escapes: every register form (ModRM C0-FF) and every memory form ([rsi], reg 0-7).
TEST(DecodeTableDifferential, UndefinedX87FormsMatchTheHost) {
  HostRunner runner;
  int failures = 0;
  for (unsigned escape = 0xd8; escape <= 0xdf; ++escape) {
    for (unsigned modrm = 0; modrm < 256 && failures < 20; ++modrm) {
      bool memory = modrm < 0xc0;
      if (memory && (modrm & 0xc7) != 0x06) continue;  // mod=00 rm=110: [rsi]
      InstructionForm form;
      form.map = OpcodeMap::kOneByte;
      form.opcode = static_cast<uint8_t>(escape);
      form.reg = (modrm >> 3) & 7;
      form.rm = modrm & 7;
      form.memory = memory;
      Encoded encoded = encode(form);
      SimdState state;
      reset(state);
      TestOperands operands;
      SimdControl control;
      SimdOutcome outcome = execute_simd(state, control, encoded.instruction, operands);
      HostMachine machine;
      state_to_fxsave(state_for_host(), machine.fxsave);
      alignas(64) std::array<uint8_t, kTestMemorySize> host_memory{};
      runner.run(encoded.bytes, machine, host_memory.data());
      bool host_undefined = runner.last_signal() == SIGILL;
      if (host_undefined != (outcome == SimdOutcome::kInvalidOpcode)) {
        ADD_FAILURE() << "escape " << std::hex << escape << " modrm " << modrm << ": host signal "
                      << std::dec << runner.last_signal() << ", unit outcome "
                      << static_cast<int>(outcome);
        ++failures;
      }
    }
  }
}

}  // namespace
}  // namespace lamina::cpu::x86::test
