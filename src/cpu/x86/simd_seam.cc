// The one place where the core hands x87/MMX/SSE instructions to the SIMD unit
// (simd/simd_unit.h). Until that unit is linked into this branch every such instruction
// raises #UD here; the merge replaces the handler body with the call to execute_simd().
#include "cpu/x86/decoder.h"
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

void simd_instruction(CpuCore&, const Instruction&) { raise_fault(vector::kInvalidOpcode); }

}  // namespace

Handler select_simd_handler(const Instruction& in) {
  return is_simd_opcode(in.opcode) ? &simd_instruction : nullptr;
}

}  // namespace lamina::cpu::x86
