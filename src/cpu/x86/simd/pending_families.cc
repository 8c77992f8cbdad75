// Temporary: families not written yet.
#include "cpu/x86/simd/sse_operands.h"
namespace lamina::cpu::x86::simd {
SimdOutcome ssse3(Context&) { return SimdOutcome::kInvalidOpcode; }
SimdOutcome sse41(Context&) { return SimdOutcome::kInvalidOpcode; }
SimdOutcome sse42_strings(Context&) { return SimdOutcome::kInvalidOpcode; }
SimdOutcome crc32(Context&) { return SimdOutcome::kInvalidOpcode; }
}  // namespace lamina::cpu::x86::simd
