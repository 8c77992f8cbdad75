// Placeholder routing for the 0F maps; filled by the MMX/SSE families.
#include "cpu/x86/simd/simd_context.h"

namespace lamina::cpu::x86::simd {
SimdOutcome execute_two_byte(Context&) { return SimdOutcome::kNotSimd; }
SimdOutcome execute_three_byte_38(Context&) { return SimdOutcome::kNotSimd; }
SimdOutcome execute_three_byte_3a(Context&) { return SimdOutcome::kNotSimd; }
}  // namespace lamina::cpu::x86::simd

namespace lamina::cpu::x86 {
SimdOpcodeInfo simd_opcode_info(OpcodeMap, uint8_t, uint8_t) { return {}; }
}  // namespace lamina::cpu::x86
