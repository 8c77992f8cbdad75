// The precision flag of an SSE lane under an unmasked overflow or underflow (see sse_host.h).
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2")

#include <cmath>

#include "cpu/x86/simd/sse_host.h"

namespace lamina::cpu::x86::simd {
namespace {

// Scalar operations in asm so that operand order (and so NaN choice) is kept.
__m128i scalar(LaneOperation operation, bool doubles, __m128i x, __m128i y) {
  switch (operation) {
    case LaneOperation::kAdd:
      if (doubles)
        asm("addsd %1, %0" : "+x"(x) : "x"(y));
      else
        asm("addss %1, %0" : "+x"(x) : "x"(y));
      return x;
    case LaneOperation::kMultiply:
      if (doubles)
        asm("mulsd %1, %0" : "+x"(x) : "x"(y));
      else
        asm("mulss %1, %0" : "+x"(x) : "x"(y));
      return x;
    case LaneOperation::kDivide:
      if (doubles)
        asm("divsd %1, %0" : "+x"(x) : "x"(y));
      else
        asm("divss %1, %0" : "+x"(x) : "x"(y));
      return x;
    case LaneOperation::kNarrow: return x;
  }
  return x;
}

// Multiplies a lane value by 2^exponent exactly (the caller keeps it in range), in steps the
// format can represent.
uint64_t scale(uint64_t bits, bool doubles, int exponent) {
  if (doubles) {
    double value;
    std::memcpy(&value, &bits, 8);
    value = std::ldexp(value, exponent);
    std::memcpy(&bits, &value, 8);
    return bits;
  }
  uint32_t narrow = static_cast<uint32_t>(bits);
  float value;
  std::memcpy(&value, &narrow, 4);
  value = std::ldexp(value, exponent);
  std::memcpy(&narrow, &value, 4);
  return narrow;
}

double magnitude(uint64_t bits, bool doubles) {
  if (doubles) {
    double value;
    std::memcpy(&value, &bits, 8);
    return std::fabs(value);
  }
  uint32_t narrow = static_cast<uint32_t>(bits);
  float value;
  std::memcpy(&value, &narrow, 4);
  return std::fabs(value);
}

uint32_t run(const ResultLanes& lanes, uint32_t mxcsr, uint64_t first, uint64_t second,
             Xmm* result) {
  bool doubles = lanes.size == 8;
  Xmm x, y;
  x.set_lane<uint64_t>(0, first);
  y.set_lane<uint64_t>(0, second);
  HostSseResult host = host_sse(
      mxcsr & ~kMxcsrFlushToZero, x, y,
      [&lanes, doubles](__m128i p, __m128i q) { return scalar(lanes.operation, doubles, p, q); });
  if (result) *result = host.value;
  return host.flags;
}

bool is_denormal(uint64_t bits, bool doubles) {
  if (doubles) return (bits & 0x7ff0000000000000ull) == 0 && (bits & 0xfffffffffffffull);
  return (bits & 0x7f800000u) == 0 && (bits & 0x7fffffu);
}

}  // namespace

bool unbounded_inexact(const ResultLanes& lanes, uint32_t mxcsr, LanePair pair) {
  bool doubles = lanes.size == 8;
  if (lanes.operation == LaneOperation::kNarrow) {
    // Inexact with an unbounded exponent when more than 24 significant bits remain.
    uint64_t significand = pair.first & 0xfffffffffffffull;
    if ((pair.first & 0x7ff0000000000000ull) == 0x7ff0000000000000ull) return false;
    // DAZ reads a denormal double as zero, which converts exactly.
    if ((mxcsr & kMxcsrDenormalsAreZeros) && is_denormal(pair.first, true)) return false;
    if (pair.first & 0x7ff0000000000000ull) significand |= 1ull << 52;
    if (significand == 0) return false;
    int width = 64 - __builtin_clzll(significand) - __builtin_ctzll(significand);
    return width > 24;
  }
  // DAZ reads denormal operands as zero before any scaling.
  if (mxcsr & kMxcsrDenormalsAreZeros) {
    uint64_t sign = doubles ? 1ull << 63 : 1ull << 31;
    if (is_denormal(pair.first, doubles)) pair.first &= sign;
    if (is_denormal(pair.second, doubles)) pair.second &= sign;
  }
  Xmm plain;
  uint32_t flags = run(lanes, mxcsr, pair.first, pair.second, &plain);
  bool overflow = flags & 0x8;
  bool tiny = !overflow && is_denormal(plain.lane<uint64_t>(0), doubles);
  if (!overflow && !(tiny || (flags & 0x10))) return flags & 0x20;
  if (lanes.operation == LaneOperation::kAdd) {
    // A tiny sum of two values of the format is exact; an overflowing one is scaled by 1/4.
    if (!overflow) return false;
    return run(lanes, mxcsr, scale(pair.first, doubles, -2), scale(pair.second, doubles, -2),
               nullptr) &
           0x20;
  }
  // Scale factors that bring any overflowing or tiny product/quotient into the normal range
  // while keeping the scaled operands in range. Products: the chosen operand is scaled twice
  // (overflow: larger operand >= sqrt(max), by 2^-132 / 2^-1040; tiny: smaller operand <=
  // sqrt(min normal), by 2^180 / 2^1200). Quotients: dividend and divisor once each in opposite
  // directions (overflow: 2^-152 / 2^-1080 in all; tiny: 2^180 / 2^1200).
  bool multiply = lanes.operation == LaneOperation::kMultiply;
  int step =
      doubles ? (overflow ? (multiply ? 520 : 540) : 600) : (overflow ? (multiply ? 66 : 76) : 90);
  int direction = overflow ? -1 : 1;
  uint64_t first = pair.first, second = pair.second;
  if (lanes.operation == LaneOperation::kMultiply) {
    // Scale the operand of larger magnitude down on overflow, of smaller magnitude up when tiny.
    bool first_larger = magnitude(first, doubles) >= magnitude(second, doubles);
    uint64_t& chosen = (overflow == first_larger) ? first : second;
    chosen = scale(scale(chosen, doubles, direction * step), doubles, direction * step);
  } else {
    first = scale(first, doubles, direction * step);
    second = scale(second, doubles, -direction * step);
  }
  return run(lanes, mxcsr, first, second, nullptr) & 0x20;
}

}  // namespace lamina::cpu::x86::simd
