// Robustness: random decoded instructions (any map, opcode, prefix, ModRM, immediate, sizes)
// against random states must never crash, hang or touch memory outside what SimdOperands
// allows, and must answer with a defined outcome. Run under -DLAMINA_SANITIZE=ON as well.

#include <gtest/gtest.h>

#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/simd/simd_unit.h"
#include "test_support.h"

namespace lamina::cpu::x86::test {
namespace {

TEST(SimdFuzz, RandomInstructionsAreSafe) {
  ValueSource values(0xf022);
  static constexpr OpcodeMap kMaps[] = {OpcodeMap::kOneByte, OpcodeMap::kTwoByte,
                                        OpcodeMap::kThreeByte38, OpcodeMap::kThreeByte3A};
  static constexpr uint8_t kPrefixes[] = {0, 0x66, 0xf2, 0xf3};
  int done = 0;
  for (int i = 0; i < 100000; ++i) {
    SimdState state;
    reset(state);
    for (auto& reg : state.x87) reg = values.extended();
    state.tag_valid = static_cast<uint8_t>(values.bits(8));
    state.status = static_cast<uint16_t>(values.bits(16));
    state.control = static_cast<uint16_t>(values.bits(16));
    state.mxcsr = static_cast<uint32_t>(values.bits(16));
    for (auto& reg : state.xmm) {
      for (auto& byte : reg.bytes) byte = static_cast<uint8_t>(values.bits(8));
    }
    SimdControl control;
    control.cr0_em = values.chance(5);
    control.cr0_ts = values.chance(5);
    control.cr0_ne = values.chance(90);
    control.cr4_osfxsr = values.chance(95);
    control.cr4_osxmmexcpt = values.chance(95);
    control.protected_mode = values.chance(80);
    SimdInstruction instruction;
    instruction.map = kMaps[values.below(4)];
    instruction.opcode = instruction.map == OpcodeMap::kOneByte && values.chance(90)
                             ? static_cast<uint8_t>(0xd8 + values.below(8))
                             : static_cast<uint8_t>(values.bits(8));
    instruction.mandatory_prefix = kPrefixes[values.below(4)];
    instruction.operand_size_prefix = values.chance(20);
    instruction.rex_w = values.chance(20);
    instruction.rex = values.chance(50);
    instruction.modrm = static_cast<uint8_t>(values.bits(8));
    instruction.reg = static_cast<uint8_t>(values.below(16));
    instruction.rm = static_cast<uint8_t>(values.below(16));
    instruction.memory_operand = values.chance(40);
    instruction.immediate = static_cast<uint8_t>(values.bits(8));
    instruction.operand_size = values.chance(30) ? 16 : 32;
    instruction.long_mode_64 = values.chance(70);
    TestOperands operands;
    operands.address = kTestEffectiveAddress + values.below(64);
    for (size_t b = 0; b < 128; b += 8) {
      uint64_t bits = values.bits(64);
      std::memcpy(operands.memory.data() + b, &bits, 8);
    }
    for (auto& reg : operands.gpr) reg = values.bits(64);
    // A memory window smaller than some operands: reads and writes past it fault cleanly.
    SimdOutcome outcome = execute_simd(state, control, instruction, operands);
    ASSERT_LE(static_cast<int>(outcome), static_cast<int>(SimdOutcome::kMemoryFault));
    if (outcome == SimdOutcome::kDone) ++done;
  }
  EXPECT_GT(done, 5000) << "the random instructions mostly executed";
}

}  // namespace
}  // namespace lamina::cpu::x86::test
