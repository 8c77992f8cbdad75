#pragma once
// Internal to the unit: the x87 register stack, its faults and the guest's exception masks
// (SDM Vol. 1 8.1-8.5). Every x87 instruction family builds on these.

#include <cstdint>
#include <optional>

#include "cpu/x86/simd/simd_context.h"
#include "cpu/x86/simd/x87_host.h"

namespace lamina::cpu::x86::simd {

// The QNaN floating-point indefinite (SDM Vol. 1 4.8.3.7), the masked response to IE.
inline constexpr X87Register kX87Indefinite{0xc000000000000000ull, 0xffff};

// The exceptions the guest has unmasked among `flags`.
inline uint16_t x87_unmasked(const SimdState& state, uint16_t flags) {
  return static_cast<uint16_t>(flags & ~state.control & kX87ExceptionFlags);
}

// Records exception flags (sticky) and sets ES and B when any of them is unmasked; the core
// then raises #MF on the next waiting x87 instruction (SDM Vol. 1 8.7).
inline void x87_raise(SimdState& state, uint16_t flags) {
  state.status |= flags & (kX87ExceptionFlags | kX87StackFault);
  if (x87_unmasked(state, flags)) state.status |= kX87ErrorSummary | kX87Busy;
}

// ES and B follow the unmasked flags after the control or status word was loaded (FLDCW,
// FLDENV, FRSTOR, FXRSTOR), as the hardware recomputes them.
inline void x87_update_error_summary(SimdState& state) {
  state.status &= static_cast<uint16_t>(~(kX87ErrorSummary | kX87Busy));
  if (x87_unmasked(state, state.status)) state.status |= kX87ErrorSummary | kX87Busy;
}

inline void x87_set_c1(SimdState& state, bool value) {
  state.status = static_cast<uint16_t>((state.status & ~kX87C1) | (value ? kX87C1 : 0));
}

// Sets the condition codes in `mask` from `codes` (a status-word image).
inline void x87_set_codes(SimdState& state, uint16_t mask, uint16_t codes) {
  state.status = static_cast<uint16_t>((state.status & ~mask) | (codes & mask));
}

inline void x87_write(SimdState& state, unsigned stack_index, const X87Register& value) {
  unsigned physical = state.physical(stack_index);
  state.x87[physical] = value;
  state.tag_valid = static_cast<uint8_t>(state.tag_valid | (1u << physical));
}

inline void x87_pop(SimdState& state) {
  state.tag_valid = static_cast<uint8_t>(state.tag_valid & ~(1u << state.top()));
  state.set_top(state.top() + 1);
}

inline void x87_push(SimdState& state, const X87Register& value) {
  state.set_top(state.top() - 1);
  x87_write(state, 0, value);
}

// Stack underflow (SDM Vol. 1 8.5.1.1): IE and SF with C1=0. Returns true when the masked
// response (the indefinite stored to the destination) should be carried out.
inline bool x87_stack_underflow(SimdState& state) {
  x87_set_c1(state, false);
  x87_raise(state, kX87Invalid | kX87StackFault);
  return !x87_unmasked(state, kX87Invalid);
}

// Stack overflow on a push: IE and SF with C1=1; the masked response pushes the indefinite.
inline bool x87_stack_overflow(SimdState& state) {
  x87_set_c1(state, true);
  x87_raise(state, kX87Invalid | kX87StackFault);
  return !x87_unmasked(state, kX87Invalid);
}

// True when a push would overwrite a register in use.
inline bool x87_push_overflows(const SimdState& state) { return !state.st_empty(7); }

// Pre-computation exceptions (invalid operand, denormal operand, divide by zero): when one of
// them is unmasked the instruction leaves its destination and the stack alone (SDM Vol. 1
// 8.5.1-8.5.3).
inline constexpr uint16_t kX87PreComputation = kX87Invalid | kX87Denormal | kX87ZeroDivide;

// Applies a host result's exception flags to the guest. Returns true when the result may be
// stored; false when an unmasked pre-computation exception stopped the instruction.
inline bool x87_accept(SimdState& state, uint16_t host_status) {
  uint16_t flags = host_status & kX87ExceptionFlags;
  if (x87_unmasked(state, flags & kX87PreComputation)) {
    x87_raise(state, flags & kX87PreComputation);
    // Nothing was computed: C1 reads 0, the other codes keep their values.
    x87_set_c1(state, false);
    return false;
  }
  x87_raise(state, flags);
  // The host started from the guest's codes, so its codes are the instruction's result.
  x87_set_codes(state, kX87ConditionCodes, host_status);
  return true;
}

// True when the masked response differs from what the hardware does under the guest's masks:
// overflow or underflow is unmasked and happened, or underflow is unmasked and the result is
// tiny (unmasked, underflow is signaled even for an exact tiny result).
inline bool x87_needs_unmasked_result(const SimdState& state, const HostX87Result& result) {
  if (x87_unmasked(state, result.status & kX87PreComputation)) return false;
  if (x87_unmasked(state, result.status & (kX87Overflow | kX87Underflow))) return true;
  bool tiny = (result.value.sign_exponent & 0x7fff) == 0 && result.value.significand != 0;
  bool tiny_second = (result.second.sign_exponent & 0x7fff) == 0 && result.second.significand != 0;
  return (tiny || tiny_second) && x87_unmasked(state, kX87Underflow);
}

// Computes a binary operation on the host and stores it into ST(destination), including the
// bias-adjusted results of unmasked overflow/underflow. False: an unmasked pre-computation
// exception stopped the instruction.
bool x87_store_binary(SimdState& state, X87Binary operation, unsigned destination,
                      const X87Register& a, const X87Register& b);

// Stores a computed result (`unmasked`: the same operation under the guest's masks, when
// x87_needs_unmasked_result() asked for it).
bool x87_store_result(SimdState& state, unsigned destination, HostX87Result result,
                      const std::optional<HostX87Result>& unmasked);

// The x87 instruction families, each given the decoded ESC instruction.
SimdOutcome x87_arithmetic(Context& context);   // D8, DC, DA, DE arithmetic and compares
SimdOutcome x87_load_store(Context& context);   // loads, stores, integer and BCD forms
SimdOutcome x87_d9_register(Context& context);  // D9 C0-FF: FLD ST(i) .. FCOS
SimdOutcome x87_control(Context& context);      // environment, control, status, FXCH, FCMOV

// Classification used by FXAM and the full tag word.
enum class X87Class : uint8_t { kUnsupported, kNan, kNormal, kInfinity, kZero, kDenormal };
X87Class x87_classify(const X87Register& value);

}  // namespace lamina::cpu::x86::simd
