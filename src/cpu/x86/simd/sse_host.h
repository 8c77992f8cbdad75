#pragma once
// Internal to the unit: SSE floating-point results computed by the host's own SSE unit, with
// the guest's rounding control, DAZ and FTZ, every exception masked and the flags clear; and
// the guest's MXCSR exception semantics applied to them (SDM Vol. 1 11.5).
//
// The host must support SSE4.1 (x86-64-v2); the files that use this header enable it with
// `#pragma GCC target` before including it.

#include <immintrin.h>

#include "cpu/x86/simd/sse_operands.h"

namespace lamina::cpu::x86::simd {

struct HostSseResult {
  Xmm value;
  uint32_t flags = 0;  // MXCSR exception flags the host raised
};

inline __m128i to_vector(const Xmm& value) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(value.bytes.data()));
}
inline Xmm from_vector(__m128i vector) {
  Xmm value;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(value.bytes.data()), vector);
  return value;
}

// Runs `operation(a, b)` on __m128i values under the guest's MXCSR controls. The empty asm
// statements make the operands opaque after MXCSR is loaded and the result before it is read,
// so the compiler can neither fold nor move the arithmetic across the MXCSR accesses.
template <typename Operation>
HostSseResult host_sse(uint32_t mxcsr, const Xmm& a, const Xmm& b, Operation operation) {
  __m128i va = to_vector(a);
  __m128i vb = to_vector(b);
  unsigned saved = _mm_getcsr();
  _mm_setcsr((mxcsr | kMxcsrMasks) & ~kMxcsrFlags & 0xffff);
  asm volatile("" : "+x"(va), "+x"(vb));
  __m128i result = operation(va, vb);
  asm volatile("" : "+x"(result));
  unsigned flags = _mm_getcsr() & kMxcsrFlags;
  _mm_setcsr(saved);
  return {from_vector(result), flags};
}

// How a lane's result relates to its operands, for the precision flag of an unmasked
// overflow or underflow, which is judged on the result rounded with an unbounded exponent.
enum class LaneOperation : uint8_t {
  kAdd,
  kMultiply,
  kDivide,
  kNarrow,  // double to single (the lane pair's `first` is the double)
};

// The two operands of result lane `index` (as raw bits of the lane format); the second is
// negated for subtractions.
struct LanePair {
  uint64_t first = 0;
  uint64_t second = 0;
};
using LaneSelector = LanePair (*)(const Xmm& a, const Xmm& b, unsigned index, bool doubles);

inline LanePair same_lane(const Xmm& a, const Xmm& b, unsigned index, bool doubles) {
  if (doubles) return {a.lane<uint64_t>(index), b.lane<uint64_t>(index)};
  return {a.lane<uint32_t>(index), b.lane<uint32_t>(index)};
}

// Which lanes of the result an instruction writes, for overflow/underflow handling.
struct ResultLanes {
  unsigned size = 4;       // bytes per lane: 4 (single) or 8 (double)
  unsigned count = 4;      // lanes written, from lane 0
  bool arithmetic = true;  // a tiny result can signal underflow (not for MIN/MAX/compares)
  LaneOperation operation = LaneOperation::kAdd;
  LaneSelector selector = same_lane;
};

// The precision flag of one lane when its result is rounded with an unbounded exponent
// (SDM Vol. 1 11.5.2.2/11.5.2.3): operands are scaled exactly so the result is a normal number
// and the host computes it. Defined in sse_lanes.cc.
bool unbounded_inexact(const ResultLanes& lanes, uint32_t mxcsr, LanePair pair);

// Computes with `operation` and commits the result to `destination` under the guest's MXCSR:
// flags are sticky; an unmasked exception leaves the destination unchanged and raises #XM
// (#UD when CR4.OSXMMEXCPT=0). When any unmasked exception is a pre-computation one (invalid,
// denormal, divide-by-zero) only those flags are recorded (SDM Vol. 1 11.5.2).
template <typename Operation>
SimdOutcome commit_sse(Context& context, Xmm& destination, const Xmm& a, const Xmm& b,
                       ResultLanes lanes, Operation operation) {
  uint32_t mxcsr = context.state.mxcsr;
  uint32_t masks = (mxcsr >> 7) & kMxcsrFlags;
  constexpr uint32_t kUnderflow = 1u << 4;
  constexpr uint32_t kPreComputation = 0x7;
  // With underflow unmasked, a tiny result signals even when exact and FTZ does not apply
  // (SDM Vol. 1 11.5.2.2), so the host computes without FTZ and the lanes are inspected.
  bool underflow_unmasked = lanes.arithmetic && !(masks & kUnderflow);
  HostSseResult result =
      host_sse(underflow_unmasked ? mxcsr & ~kMxcsrFlushToZero : mxcsr, a, b, operation);
  if (underflow_unmasked) {
    for (unsigned i = 0; i < lanes.count; ++i) {
      bool tiny = lanes.size == 4
                      ? ((result.value.lane<uint32_t>(i) & 0x7f800000u) == 0 &&
                         (result.value.lane<uint32_t>(i) & 0x7fffffu) != 0)
                      : ((result.value.lane<uint64_t>(i) & 0x7ff0000000000000ull) == 0 &&
                         (result.value.lane<uint64_t>(i) & 0xfffffffffffffull) != 0);
      if (tiny) result.flags |= kUnderflow;
    }
  }
  constexpr uint32_t kOverflowUnderflow = 0x18;
  if (lanes.arithmetic && (result.flags & ~masks & kOverflowUnderflow) &&
      !(result.flags & ~masks & kPreComputation)) {
    // The instruction faults on overflow/underflow: precision is as the unbounded-exponent
    // results have it, lane by lane.
    uint32_t precision = 0;
    for (unsigned i = 0; i < lanes.count; ++i) {
      if (unbounded_inexact(lanes, mxcsr, lanes.selector(a, b, i, lanes.size == 8)))
        precision = 0x20;
    }
    result.flags = (result.flags & ~0x20u) | precision;
  }
  uint32_t unmasked = result.flags & ~masks;
  if (unmasked) {
    context.state.mxcsr |=
        (unmasked & kPreComputation) ? result.flags & kPreComputation : result.flags;
    return context.control.cr4_osxmmexcpt ? SimdOutcome::kSimdException
                                          : SimdOutcome::kInvalidOpcode;
  }
  context.state.mxcsr |= result.flags;
  destination = result.value;
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
