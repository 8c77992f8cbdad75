// The D9 register group: FNOP, FCHS, FABS, FTST, FXAM, the constants, and the transcendental
// and other one-operand functions D9 F0-FF (SDM Vol. 2, the entries of each mnemonic).

#include "cpu/x86/simd/x87_stack.h"

namespace lamina::cpu::x86::simd {

X87Class x87_classify(const X87Register& value) {
  unsigned exponent = value.sign_exponent & 0x7fff;
  bool integer_bit = value.significand >> 63;
  if (exponent == 0) return value.significand == 0 ? X87Class::kZero : X87Class::kDenormal;
  if (exponent == 0x7fff) {
    if (!integer_bit) return X87Class::kUnsupported;  // pseudo-infinity, pseudo-NaN
    return (value.significand << 1) == 0 ? X87Class::kInfinity : X87Class::kNan;
  }
  return integer_bit ? X87Class::kNormal : X87Class::kUnsupported;  // unnormal
}

namespace {

// SDM Vol. 2 FXAM: C3, C2, C0 encode the class; C1 is the sign.
void examine(SimdState& state) {
  const X87Register& value = state.st(0);
  uint16_t codes = 0;
  if (state.st_empty(0)) {
    codes = kX87C3 | kX87C0;
  } else {
    switch (x87_classify(value)) {
      case X87Class::kUnsupported: codes = 0; break;
      case X87Class::kNan: codes = kX87C0; break;
      case X87Class::kNormal: codes = kX87C2; break;
      case X87Class::kInfinity: codes = kX87C2 | kX87C0; break;
      case X87Class::kZero: codes = kX87C3; break;
      case X87Class::kDenormal: codes = kX87C3 | kX87C2; break;
    }
  }
  if (value.sign_exponent & 0x8000) codes |= kX87C1;
  x87_set_codes(state, kX87ConditionCodes, codes);
}

void test_against_zero(SimdState& state) {
  if (state.st_empty(0)) {
    x87_stack_underflow(state);
    x87_set_codes(state, kX87C0 | kX87C2 | kX87C3, 0xffff);
    return;
  }
  // Like FCOM: the codes are reported even when an unmasked exception is signaled.
  HostX87Result result =
      host_binary(X87Binary::kCompare, state.control, state.status, state.st(0), X87Register{});
  x87_raise(state, result.status & kX87ExceptionFlags);
  x87_set_codes(state, kX87C0 | kX87C1 | kX87C2 | kX87C3, result.status & ~kX87C1);
}

// FSQRT, FRNDINT, F2XM1, FSIN, FCOS: ST(0) := f(ST(0)); C2 reports an out-of-range operand of
// the trigonometric functions (|x| >= 2^63), which leaves ST(0) unchanged.
void unary(SimdState& state, X87Unary operation) {
  bool trigonometric = operation == X87Unary::kSine || operation == X87Unary::kCosine;
  if (state.st_empty(0)) {
    if (trigonometric) x87_set_codes(state, kX87C2, 0);
    if (x87_stack_underflow(state)) x87_write(state, 0, kX87Indefinite);
    return;
  }
  if (trigonometric) x87_set_codes(state, kX87C2, 0);
  HostX87Result result = host_unary(operation, state.control, state.status, state.st(0));
  if (x87_needs_unmasked_result(state, result)) {
    result = host_unary_unmasked(operation, state.control, state.status, state.st(0));
  }
  if (!x87_accept(state, result.status)) return;
  if (trigonometric) {
    x87_set_codes(state, kX87C2, result.status);
    if (result.status & kX87C2) return;
  }
  x87_write(state, 0, result.value);
}

// FPTAN, FSINCOS, FXTRACT: ST(0) := second result, then push the first.
void unary_two_results(SimdState& state, X87Unary operation) {
  bool empty = state.st_empty(0);
  if (empty || x87_push_overflows(state)) {
    if (operation != X87Unary::kExtract) x87_set_codes(state, kX87C2, 0);
    bool masked = empty ? x87_stack_underflow(state) : x87_stack_overflow(state);
    if (masked) {
      x87_write(state, 0, kX87Indefinite);
      x87_push(state, kX87Indefinite);
    }
    return;
  }
  if (operation != X87Unary::kExtract) x87_set_codes(state, kX87C2, 0);
  HostX87Result result = host_unary(operation, state.control, state.status, state.st(0));
  if (x87_needs_unmasked_result(state, result)) {
    result = host_unary_unmasked(operation, state.control, state.status, state.st(0));
  }
  if (!x87_accept(state, result.status)) return;
  if (operation != X87Unary::kExtract) {
    x87_set_codes(state, kX87C2, result.status);
    if (result.status & kX87C2) return;
  }
  x87_write(state, 0, result.second);
  x87_push(state, result.value);
}

// FPATAN, FYL2X, FYL2XP1: ST(1) := f(ST(0), ST(1)), then pop.
void binary_pop(SimdState& state, X87Binary operation) {
  if (state.st_empty(0) || state.st_empty(1)) {
    if (!x87_stack_underflow(state)) return;
    x87_write(state, 1, kX87Indefinite);
  } else if (!x87_store_binary(state, operation, 1, state.st(0), state.st(1))) {
    return;
  }
  x87_pop(state);
}

// FPREM, FPREM1: ST(0) := remainder; C0, C3, C1 are the low quotient bits and C2 says the
// reduction is incomplete (SDM Vol. 2 FPREM).
void remainder(SimdState& state, X87Binary operation) {
  x87_set_codes(state, kX87C2, 0);
  if (state.st_empty(0) || state.st_empty(1)) {
    if (x87_stack_underflow(state)) x87_write(state, 0, kX87Indefinite);
    return;
  }
  // The host starts from the guest's codes: which quotient bits an FPREM leaves unchanged
  // (zero dividend, infinite divisor, NaNs) is then the hardware's own answer.
  HostX87Result result =
      host_binary(operation, state.control, state.status, state.st(0), state.st(1));
  if (x87_needs_unmasked_result(state, result)) {
    result = host_binary_unmasked(operation, state.control, state.status, state.st(0), state.st(1));
  }
  if (!x87_accept(state, result.status)) return;
  x87_set_codes(state, kX87ConditionCodes, result.status);
  x87_write(state, 0, result.value);
}

}  // namespace

SimdOutcome x87_d9_register(Context& context) {
  SimdState& state = context.state;
  uint8_t modrm = context.instruction.modrm;
  switch (modrm) {
    case 0xd0: return SimdOutcome::kDone;  // FNOP
    case 0xe0:                             // FCHS
    case 0xe1:                             // FABS
      if (state.st_empty(0)) {
        if (x87_stack_underflow(state)) x87_write(state, 0, kX87Indefinite);
        return SimdOutcome::kDone;
      }
      {
        X87Register value = state.st(0);
        value.sign_exponent =
            modrm == 0xe0 ? value.sign_exponent ^ 0x8000 : value.sign_exponent & 0x7fff;
        x87_write(state, 0, value);
        x87_set_c1(state, false);
      }
      return SimdOutcome::kDone;
    case 0xe4: test_against_zero(state); return SimdOutcome::kDone;
    case 0xe5: examine(state); return SimdOutcome::kDone;
    case 0xe8:
    case 0xe9:
    case 0xea:
    case 0xeb:
    case 0xec:
    case 0xed:
    case 0xee: {
      if (x87_push_overflows(state)) {
        if (x87_stack_overflow(state)) x87_push(state, kX87Indefinite);
        return SimdOutcome::kDone;
      }
      HostX87Result constant = host_constant(modrm & 7, state.control, state.status);
      x87_set_c1(state, false);
      x87_push(state, constant.value);
      return SimdOutcome::kDone;
    }
    case 0xf0: unary(state, X87Unary::kTwoToXMinusOne); return SimdOutcome::kDone;
    case 0xf1: binary_pop(state, X87Binary::kLogarithm); return SimdOutcome::kDone;
    case 0xf2: unary_two_results(state, X87Unary::kTangent); return SimdOutcome::kDone;
    case 0xf3: binary_pop(state, X87Binary::kArcTangent); return SimdOutcome::kDone;
    case 0xf4: unary_two_results(state, X87Unary::kExtract); return SimdOutcome::kDone;
    case 0xf5: remainder(state, X87Binary::kRemainderIeee); return SimdOutcome::kDone;
    case 0xf6:  // FDECSTP
    case 0xf7:  // FINCSTP
      state.set_top(state.top() + (modrm == 0xf7 ? 1 : 7));
      x87_set_c1(state, false);
      return SimdOutcome::kDone;
    case 0xf8: remainder(state, X87Binary::kRemainder); return SimdOutcome::kDone;
    case 0xf9: binary_pop(state, X87Binary::kLogarithmPlusOne); return SimdOutcome::kDone;
    case 0xfa: unary(state, X87Unary::kSquareRoot); return SimdOutcome::kDone;
    case 0xfb: unary_two_results(state, X87Unary::kSineCosine); return SimdOutcome::kDone;
    case 0xfc: unary(state, X87Unary::kRound); return SimdOutcome::kDone;
    case 0xfd:  // FSCALE
      if (state.st_empty(0) || state.st_empty(1)) {
        if (x87_stack_underflow(state)) x87_write(state, 0, kX87Indefinite);
      } else {
        x87_store_binary(state, X87Binary::kScale, 0, state.st(0), state.st(1));
      }
      return SimdOutcome::kDone;
    case 0xfe: unary(state, X87Unary::kSine); return SimdOutcome::kDone;
    case 0xff: unary(state, X87Unary::kCosine); return SimdOutcome::kDone;
    default: return SimdOutcome::kInvalidOpcode;
  }
}

}  // namespace lamina::cpu::x86::simd
