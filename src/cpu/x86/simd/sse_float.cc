// SSE/SSE2/SSE3 floating-point arithmetic: SQRT, RSQRT, RCP, ADD, MUL, SUB, MIN, DIV, MAX in
// packed and scalar single/double forms, CMPccPS/PD/SS/SD, COMISS/COMISD/UCOMISS/UCOMISD,
// HADDPS/PD, HSUBPS/PD, ADDSUBPS/PD (SDM Vol. 2, the entries of each mnemonic).
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2")

#include "cpu/x86/simd/sse_host.h"

namespace lamina::cpu::x86::simd {
namespace {

__m128 single(__m128i value) { return _mm_castsi128_ps(value); }
__m128d dual(__m128i value) { return _mm_castsi128_pd(value); }
__m128i bits(__m128 value) { return _mm_castps_si128(value); }
__m128i bits(__m128d value) { return _mm_castpd_si128(value); }

// Addition and multiplication in asm: the compiler may swap the operands of the intrinsics
// (they commute numerically), but which NaN propagates depends on the operand order.
template <int kOperation>
__m128i ordered(__m128i a, __m128i b) {
  if constexpr (kOperation == 0) asm("addps %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 1) asm("addpd %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 2) asm("addss %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 3) asm("addsd %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 4) asm("mulps %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 5) asm("mulpd %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 6) asm("mulss %1, %0" : "+x"(a) : "x"(b));
  if constexpr (kOperation == 7) asm("mulsd %1, %0" : "+x"(a) : "x"(b));
  return a;
}

enum class Form : uint8_t { kPackedSingle, kPackedDouble, kScalarSingle, kScalarDouble };

Form form_of(uint8_t prefix) {
  switch (prefix) {
    case 0x66: return Form::kPackedDouble;
    case 0xf3: return Form::kScalarSingle;
    case 0xf2: return Form::kScalarDouble;
    default: return Form::kPackedSingle;
  }
}

// The host operation for an arithmetic opcode in one form.
__m128i arithmetic(uint8_t opcode, Form form, __m128i a, __m128i b) {
  switch (form) {
    case Form::kPackedSingle:
      switch (opcode) {
        case 0x51: return bits(_mm_sqrt_ps(single(b)));
        case 0x52: return bits(_mm_rsqrt_ps(single(b)));
        case 0x53: return bits(_mm_rcp_ps(single(b)));
        case 0x58: return ordered<0>(a, b);
        case 0x59: return ordered<4>(a, b);
        case 0x5c: return bits(_mm_sub_ps(single(a), single(b)));
        case 0x5d: return bits(_mm_min_ps(single(a), single(b)));
        case 0x5e: return bits(_mm_div_ps(single(a), single(b)));
        default: return bits(_mm_max_ps(single(a), single(b)));
      }
    case Form::kPackedDouble:
      switch (opcode) {
        case 0x51: return bits(_mm_sqrt_pd(dual(b)));
        case 0x58: return ordered<1>(a, b);
        case 0x59: return ordered<5>(a, b);
        case 0x5c: return bits(_mm_sub_pd(dual(a), dual(b)));
        case 0x5d: return bits(_mm_min_pd(dual(a), dual(b)));
        case 0x5e: return bits(_mm_div_pd(dual(a), dual(b)));
        case 0x7c: return bits(_mm_hadd_pd(dual(a), dual(b)));
        case 0x7d: return bits(_mm_hsub_pd(dual(a), dual(b)));
        case 0xd0: return bits(_mm_addsub_pd(dual(a), dual(b)));
        default: return bits(_mm_max_pd(dual(a), dual(b)));
      }
    case Form::kScalarSingle:
      switch (opcode) {
        case 0x51: return bits(_mm_move_ss(single(a), _mm_sqrt_ss(single(b))));
        case 0x52: return bits(_mm_move_ss(single(a), _mm_rsqrt_ss(single(b))));
        case 0x53: return bits(_mm_move_ss(single(a), _mm_rcp_ss(single(b))));
        case 0x58: return ordered<2>(a, b);
        case 0x59: return ordered<6>(a, b);
        case 0x5c: return bits(_mm_sub_ss(single(a), single(b)));
        case 0x5d: return bits(_mm_min_ss(single(a), single(b)));
        case 0x5e: return bits(_mm_div_ss(single(a), single(b)));
        default: return bits(_mm_max_ss(single(a), single(b)));
      }
    case Form::kScalarDouble:
      switch (opcode) {
        case 0x51: return bits(_mm_sqrt_sd(dual(a), dual(b)));
        case 0x58: return ordered<3>(a, b);
        case 0x59: return ordered<7>(a, b);
        case 0x5c: return bits(_mm_sub_sd(dual(a), dual(b)));
        case 0x5d: return bits(_mm_min_sd(dual(a), dual(b)));
        case 0x5e: return bits(_mm_div_sd(dual(a), dual(b)));
        case 0x7c: return bits(_mm_hadd_ps(single(a), single(b)));
        case 0x7d: return bits(_mm_hsub_ps(single(a), single(b)));
        case 0xd0: return bits(_mm_addsub_ps(single(a), single(b)));
        default: return bits(_mm_max_sd(dual(a), dual(b)));
      }
  }
  return a;
}

// CMPPS/PD/SS/SD with the eight SSE predicates (imm8 bits 2:0).
__m128i compare(unsigned predicate, Form form, __m128i a, __m128i b) {
  switch (form) {
    case Form::kPackedSingle:
      switch (predicate & 7) {
        case 0: return bits(_mm_cmpeq_ps(single(a), single(b)));
        case 1: return bits(_mm_cmplt_ps(single(a), single(b)));
        case 2: return bits(_mm_cmple_ps(single(a), single(b)));
        case 3: return bits(_mm_cmpunord_ps(single(a), single(b)));
        case 4: return bits(_mm_cmpneq_ps(single(a), single(b)));
        case 5: return bits(_mm_cmpnlt_ps(single(a), single(b)));
        case 6: return bits(_mm_cmpnle_ps(single(a), single(b)));
        default: return bits(_mm_cmpord_ps(single(a), single(b)));
      }
    case Form::kPackedDouble:
      switch (predicate & 7) {
        case 0: return bits(_mm_cmpeq_pd(dual(a), dual(b)));
        case 1: return bits(_mm_cmplt_pd(dual(a), dual(b)));
        case 2: return bits(_mm_cmple_pd(dual(a), dual(b)));
        case 3: return bits(_mm_cmpunord_pd(dual(a), dual(b)));
        case 4: return bits(_mm_cmpneq_pd(dual(a), dual(b)));
        case 5: return bits(_mm_cmpnlt_pd(dual(a), dual(b)));
        case 6: return bits(_mm_cmpnle_pd(dual(a), dual(b)));
        default: return bits(_mm_cmpord_pd(dual(a), dual(b)));
      }
    case Form::kScalarSingle:
      switch (predicate & 7) {
        case 0: return bits(_mm_cmpeq_ss(single(a), single(b)));
        case 1: return bits(_mm_cmplt_ss(single(a), single(b)));
        case 2: return bits(_mm_cmple_ss(single(a), single(b)));
        case 3: return bits(_mm_cmpunord_ss(single(a), single(b)));
        case 4: return bits(_mm_cmpneq_ss(single(a), single(b)));
        case 5: return bits(_mm_cmpnlt_ss(single(a), single(b)));
        case 6: return bits(_mm_cmpnle_ss(single(a), single(b)));
        default: return bits(_mm_cmpord_ss(single(a), single(b)));
      }
    case Form::kScalarDouble:
      switch (predicate & 7) {
        case 0: return bits(_mm_cmpeq_sd(dual(a), dual(b)));
        case 1: return bits(_mm_cmplt_sd(dual(a), dual(b)));
        case 2: return bits(_mm_cmple_sd(dual(a), dual(b)));
        case 3: return bits(_mm_cmpunord_sd(dual(a), dual(b)));
        case 4: return bits(_mm_cmpneq_sd(dual(a), dual(b)));
        case 5: return bits(_mm_cmpnlt_sd(dual(a), dual(b)));
        case 6: return bits(_mm_cmpnle_sd(dual(a), dual(b)));
        default: return bits(_mm_cmpord_sd(dual(a), dual(b)));
      }
  }
  return a;
}

// COMISS/COMISD/UCOMISS/UCOMISD: ZF, PF, CF from the comparison; OF, SF, AF cleared.
SimdOutcome compare_to_flags(Context& context, bool doubles, bool ordered) {
  Xmm source;
  if (auto failed = read_source(context, source, doubles ? 8 : 4, false, false)) return *failed;
  const Xmm& first = context.state.xmm[context.instruction.reg & 15];
  Xmm flags_out;
  auto operation = [doubles, ordered](__m128i a, __m128i b) {
    uint8_t zero, parity, carry;
    if (doubles && ordered) {
      asm volatile("comisd %4, %3\n\tsetz %0\n\tsetp %1\n\tsetc %2"
                   : "=q"(zero), "=q"(parity), "=q"(carry)
                   : "x"(a), "x"(b)
                   : "cc");
    } else if (doubles) {
      asm volatile("ucomisd %4, %3\n\tsetz %0\n\tsetp %1\n\tsetc %2"
                   : "=q"(zero), "=q"(parity), "=q"(carry)
                   : "x"(a), "x"(b)
                   : "cc");
    } else if (ordered) {
      asm volatile("comiss %4, %3\n\tsetz %0\n\tsetp %1\n\tsetc %2"
                   : "=q"(zero), "=q"(parity), "=q"(carry)
                   : "x"(a), "x"(b)
                   : "cc");
    } else {
      asm volatile("ucomiss %4, %3\n\tsetz %0\n\tsetp %1\n\tsetc %2"
                   : "=q"(zero), "=q"(parity), "=q"(carry)
                   : "x"(a), "x"(b)
                   : "cc");
    }
    return _mm_cvtsi32_si128(carry | (parity << 2) | (zero << 6));
  };
  SimdOutcome outcome = commit_sse(context, flags_out, first, source, {4, 0, false}, operation);
  if (outcome != SimdOutcome::kDone) return outcome;
  uint64_t rflags = context.operands.read_rflags() & ~uint64_t{0x8d5};
  context.operands.write_rflags(rflags | flags_out.lane<uint32_t>(0));
  return SimdOutcome::kDone;
}

uint64_t negate(uint64_t value, bool doubles) {
  return value ^ (doubles ? 1ull << 63 : 1ull << 31);
}

template <typename T>
uint64_t lane_bits(const Xmm& value, unsigned index) {
  return value.lane<T>(index);
}

uint64_t lane_of(const Xmm& value, unsigned index, bool doubles) {
  return doubles ? lane_bits<uint64_t>(value, index) : lane_bits<uint32_t>(value, index);
}

LanePair subtract_lane(const Xmm& a, const Xmm& b, unsigned index, bool doubles) {
  return {lane_of(a, index, doubles), negate(lane_of(b, index, doubles), doubles)};
}

// HADD: result lanes are pairs of adjacent lanes of a, then of b.
LanePair horizontal_add_lane(const Xmm& a, const Xmm& b, unsigned index, bool doubles) {
  unsigned half = doubles ? 1 : 2;
  const Xmm& source = index < half ? a : b;
  unsigned base = 2 * (index % half);
  return {lane_of(source, base, doubles), lane_of(source, base + 1, doubles)};
}

LanePair horizontal_subtract_lane(const Xmm& a, const Xmm& b, unsigned index, bool doubles) {
  LanePair pair = horizontal_add_lane(a, b, index, doubles);
  return {pair.first, negate(pair.second, doubles)};
}

// ADDSUB: even lanes subtract, odd lanes add.
LanePair alternating_lane(const Xmm& a, const Xmm& b, unsigned index, bool doubles) {
  LanePair pair = same_lane(a, b, index, doubles);
  if (index % 2 == 0) pair.second = negate(pair.second, doubles);
  return pair;
}

}  // namespace

SimdOutcome sse_float(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  if (auto failed = sse_check(context)) return *failed;
  uint8_t opcode = instruction.opcode;
  uint8_t prefix = instruction.mandatory_prefix;
  if (opcode == 0x2e || opcode == 0x2f) {
    if (prefix > 0x66) return SimdOutcome::kInvalidOpcode;
    return compare_to_flags(context, prefix == 0x66, opcode == 0x2f);
  }
  Form form = form_of(prefix);
  bool horizontal = opcode == 0x7c || opcode == 0x7d || opcode == 0xd0;
  if (horizontal && prefix != 0x66 && prefix != 0xf2) return SimdOutcome::kInvalidOpcode;
  if ((opcode == 0x52 || opcode == 0x53) &&
      (form == Form::kPackedDouble || form == Form::kScalarDouble)) {
    return SimdOutcome::kInvalidOpcode;
  }
  bool scalar = !horizontal && (form == Form::kScalarSingle || form == Form::kScalarDouble);
  bool doubles =
      horizontal ? prefix == 0x66 : (form == Form::kPackedDouble || form == Form::kScalarDouble);
  unsigned size = scalar ? (doubles ? 8 : 4) : 16;
  Xmm source;
  if (auto failed = read_source(context, source, size, false, !scalar)) return *failed;
  Xmm& destination = context.state.xmm[instruction.reg & 15];
  ResultLanes lanes{doubles ? 8u : 4u, scalar ? 1u : (doubles ? 2u : 4u), true};
  if (opcode == 0xc2) {
    lanes.arithmetic = false;
    unsigned predicate = instruction.immediate;
    return commit_sse(
        context, destination, destination, source, lanes,
        [predicate, form](__m128i a, __m128i b) { return compare(predicate, form, a, b); });
  }
  if (opcode == 0x5d || opcode == 0x5f || opcode == 0x52 || opcode == 0x53)
    lanes.arithmetic = false;
  if (opcode == 0x59) lanes.operation = LaneOperation::kMultiply;
  if (opcode == 0x5e) lanes.operation = LaneOperation::kDivide;
  if (opcode == 0x5c) lanes.selector = subtract_lane;
  if (opcode == 0x7c) lanes.selector = horizontal_add_lane;
  if (opcode == 0x7d) lanes.selector = horizontal_subtract_lane;
  if (opcode == 0xd0) lanes.selector = alternating_lane;
  // The horizontal forms reuse the scalar-double slot of `arithmetic` for their single forms.
  Form host_form = horizontal ? (prefix == 0x66 ? Form::kPackedDouble : Form::kScalarDouble) : form;
  return commit_sse(
      context, destination, destination, source, lanes,
      [opcode, host_form](__m128i a, __m128i b) { return arithmetic(opcode, host_form, a, b); });
}

}  // namespace lamina::cpu::x86::simd
