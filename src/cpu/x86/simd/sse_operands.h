#pragma once
// Internal to the unit: the checks and operand access shared by the MMX and SSE families
// (SDM Vol. 1 11.6.2, 12.1.3 and Vol. 3 2.5: CR0.EM, CR0.TS, CR4.OSFXSR).

#include <optional>

#include "cpu/x86/simd/simd_context.h"

namespace lamina::cpu::x86::simd {

// SSE: #UD when CR0.EM=1 or CR4.OSFXSR=0, #NM when CR0.TS=1.
inline std::optional<SimdOutcome> sse_check(const Context& context) {
  if (context.control.cr0_em || !context.control.cr4_osfxsr) return SimdOutcome::kInvalidOpcode;
  if (context.control.cr0_ts) return SimdOutcome::kDeviceNotAvailable;
  return std::nullopt;
}

// MMX: #UD when CR0.EM=1, #NM when CR0.TS=1, #MF when an x87 exception is pending; then the
// x87 state enters MMX mode: TOP=0 and every tag valid (SDM Vol. 1 9.5.1).
inline std::optional<SimdOutcome> mmx_enter(Context& context) {
  if (context.control.cr0_em) return SimdOutcome::kInvalidOpcode;
  if (context.control.cr0_ts) return SimdOutcome::kDeviceNotAvailable;
  if ((context.state.status & kX87ErrorSummary) && context.control.cr0_ne) {
    return SimdOutcome::kFloatingPointError;
  }
  context.state.set_top(0);
  context.state.tag_valid = 0xff;
  return std::nullopt;
}

inline uint64_t mmx_read(const SimdState& state, unsigned index) {
  return state.x87[index & 7].significand;
}
// Writing an MMX register sets the aliased exponent and sign to all ones (SDM Vol. 1 9.5.1).
inline void mmx_write(SimdState& state, unsigned index, uint64_t value) {
  state.x87[index & 7] = X87Register{value, 0xffff};
}

// Reads the r/m operand (`size` bytes: 4, 8 or 16) into the low bytes of `value`, from an XMM
// register, an MMX register (`mmx`) or memory. A 16-byte memory operand of an aligned form
// must be 16-byte aligned (#GP(0), SDM Vol. 1 11.4.1). Returns nullopt on success.
inline std::optional<SimdOutcome> read_source(Context& context, Xmm& value, unsigned size, bool mmx,
                                              bool aligned) {
  value = Xmm{};
  if (!context.instruction.memory_operand) {
    if (mmx) {
      uint64_t bits = mmx_read(context.state, context.instruction.rm);
      std::memcpy(value.bytes.data(), &bits, 8);
    } else {
      value = context.state.xmm[context.instruction.rm & 15];
    }
    return std::nullopt;
  }
  if (aligned && size == 16 && (context.operands.effective_address() & 15)) {
    return SimdOutcome::kGeneralProtection;
  }
  if (!context.read_bytes(0, value.bytes.data(), size)) return SimdOutcome::kMemoryFault;
  return std::nullopt;
}

// The MMX/SSE families.
SimdOutcome packed_integer(Context& context, bool xmm);  // 0F 60-76, 0F D1-FE and friends
SimdOutcome sse_move(Context& context);                  // MOV*, shuffles, unpacks, MXCSR
SimdOutcome sse_float(Context& context);                 // packed/scalar FP arithmetic
SimdOutcome fxsave_fxrstor(Context& context, bool restore);
SimdOutcome mask_move(Context& context);      // MASKMOVQ / MASKMOVDQU
SimdOutcome sse_convert(Context& context);    // CVT*
SimdOutcome ssse3(Context& context);          // 0F 38 00-1E, 0F 3A 0F
SimdOutcome sse41(Context& context);          // SSE4.1 (and PCMPGTQ)
SimdOutcome sse42_strings(Context& context);  // PCMPESTRI/M, PCMPISTRI/M
SimdOutcome crc32(Context& context);
// DPPS/DPPD into `destination` (an XMM register of the state).
SimdOutcome dot_product(Context& context, Xmm& destination, const Xmm& source, uint8_t control,
                        bool doubles);  // F2 0F 38 F0/F1

}  // namespace lamina::cpu::x86::simd
