// The unit's entry point: routes an instruction by opcode map to its family.

#include "cpu/x86/simd/simd_unit.h"

#include "cpu/x86/simd/simd_context.h"

namespace lamina::cpu::x86 {

SimdOutcome execute_simd(SimdState& state, const SimdControl& control,
                         const SimdInstruction& instruction, SimdOperands& operands) {
  simd::Context context{state, control, instruction, operands};
  switch (instruction.map) {
    case OpcodeMap::kOneByte:
      if (instruction.opcode == 0x9b) return simd::execute_fwait(context);
      if (instruction.opcode >= 0xd8 && instruction.opcode <= 0xdf)
        return simd::execute_x87(context);
      return SimdOutcome::kNotSimd;
    case OpcodeMap::kTwoByte: return simd::execute_two_byte(context);
    case OpcodeMap::kThreeByte38: return simd::execute_three_byte_38(context);
    case OpcodeMap::kThreeByte3A: return simd::execute_three_byte_3a(context);
  }
  return SimdOutcome::kNotSimd;
}

}  // namespace lamina::cpu::x86
