// DPPS/DPPD (SDM Vol. 2 DPPS, DPPD): the pseudo-code's steps (masked products, pairwise sums,
// final sum) executed as separate SSE operations, each with the full MXCSR semantics: an
// unmasked exception in one step stops the instruction there with the flags gathered so far.
// DAZ and FTZ apply to every step, as the host shows.
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2")

#include "cpu/x86/simd/sse_host.h"

namespace lamina::cpu::x86::simd {
namespace {

Xmm select(const Xmm& value, uint8_t mask, bool doubles) {
  Xmm out;
  unsigned size = doubles ? 8 : 4;
  for (unsigned i = 0; i < 16 / size; ++i) {
    if (mask & (1u << i))
      std::memcpy(out.bytes.data() + size * i, value.bytes.data() + size * i, size);
  }
  return out;
}

__m128i add(bool doubles, __m128i x, __m128i y) {
  if (doubles)
    asm("addpd %1, %0" : "+x"(x) : "x"(y));
  else
    asm("addps %1, %0" : "+x"(x) : "x"(y));
  return x;
}

}  // namespace

SimdOutcome dot_product(Context& context, Xmm& destination, const Xmm& source, uint8_t control,
                        bool doubles) {
  unsigned size = doubles ? 8 : 4;
  unsigned count = doubles ? 2 : 4;
  uint8_t product_mask = static_cast<uint8_t>(control >> 4);
  // Step 1: products of the selected lanes; the others are +0.0 * +0.0, which signals nothing.
  Xmm products;
  ResultLanes product_lanes{size, count, true, LaneOperation::kMultiply};
  SimdOutcome outcome = commit_sse(context, products, select(destination, product_mask, doubles),
                                   select(source, product_mask, doubles), product_lanes,
                                   [doubles](__m128i x, __m128i y) {
                                     if (doubles)
                                       asm("mulpd %1, %0" : "+x"(x) : "x"(y));
                                     else
                                       asm("mulps %1, %0" : "+x"(x) : "x"(y));
                                     return x;
                                   });
  if (outcome != SimdOutcome::kDone) return outcome;
  // Step 2 (DPPS): lane 0 + lane 1 and lane 2 + lane 3, as one packed addition of the even
  // lanes to the odd ones. DPPD adds its two lanes directly.
  Xmm even, odd;
  if (doubles) {
    even.set_lane<uint64_t>(0, products.lane<uint64_t>(0));
    odd.set_lane<uint64_t>(0, products.lane<uint64_t>(1));
  } else {
    even.set_lane<uint32_t>(0, products.lane<uint32_t>(0));
    even.set_lane<uint32_t>(1, products.lane<uint32_t>(2));
    odd.set_lane<uint32_t>(0, products.lane<uint32_t>(1));
    odd.set_lane<uint32_t>(1, products.lane<uint32_t>(3));
  }
  Xmm sums;
  ResultLanes sum_lanes{size, doubles ? 1u : 2u, true, LaneOperation::kAdd};
  auto adder = [doubles](__m128i x, __m128i y) { return add(doubles, x, y); };
  outcome = commit_sse(context, sums, even, odd, sum_lanes, adder);
  if (outcome == SimdOutcome::kDone && !doubles) {
    // Step 3 (DPPS): the two partial sums.
    Xmm first, second;
    first.set_lane<uint32_t>(0, sums.lane<uint32_t>(0));
    second.set_lane<uint32_t>(0, sums.lane<uint32_t>(1));
    sum_lanes.count = 1;
    outcome = commit_sse(context, sums, first, second, sum_lanes, adder);
  }
  if (outcome != SimdOutcome::kDone) return outcome;
  Xmm result;
  for (unsigned i = 0; i < count; ++i) {
    if (control & (1u << i)) std::memcpy(result.bytes.data() + size * i, sums.bytes.data(), size);
  }
  destination = result;
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
