// SSE/SSE2 conversions: CVTPI2PS/PD, CVTSI2SS/SD, CVT(T)PS2PI, CVT(T)PD2PI, CVT(T)SS2SI,
// CVT(T)SD2SI, CVTPS2PD, CVTPD2PS, CVTSS2SD, CVTSD2SS, CVTDQ2PS, CVT(T)PS2DQ, CVTDQ2PD,
// CVT(T)PD2DQ (SDM Vol. 2, the entries of each mnemonic), computed by the host under MXCSR.
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2")

#include "cpu/x86/simd/sse_host.h"

namespace lamina::cpu::x86::simd {
namespace {

__m128 single(__m128i value) { return _mm_castsi128_ps(value); }
__m128d dual(__m128i value) { return _mm_castsi128_pd(value); }
__m128i bits(__m128 value) { return _mm_castps_si128(value); }
__m128i bits(__m128d value) { return _mm_castpd_si128(value); }

// The double that result lane `index` of a narrowing conversion comes from.
LanePair narrow_lane(const Xmm&, const Xmm& b, unsigned index, bool) {
  return {b.lane<uint64_t>(index), 0};
}

// Keeps the low 64 bits of `low` and the high 64 bits of `high`.
__m128i merge_low(__m128i high, __m128i low) { return bits(_mm_move_sd(dual(high), dual(low))); }

// Scalar float to integer into a general register (CVT(T)SS2SI, CVT(T)SD2SI).
SimdOutcome to_integer(Context& context, bool doubles, bool truncate) {
  const SimdInstruction& instruction = context.instruction;
  Xmm source;
  if (auto failed = read_source(context, source, doubles ? 8 : 4, false, false)) return *failed;
  bool wide = instruction.rex_w;
  Xmm out;
  auto operation = [doubles, truncate, wide](__m128i, __m128i b) -> __m128i {
    if (wide) {
      long long value = doubles
                            ? (truncate ? _mm_cvttsd_si64(dual(b)) : _mm_cvtsd_si64(dual(b)))
                            : (truncate ? _mm_cvttss_si64(single(b)) : _mm_cvtss_si64(single(b)));
      return _mm_cvtsi64_si128(value);
    }
    int value = doubles ? (truncate ? _mm_cvttsd_si32(dual(b)) : _mm_cvtsd_si32(dual(b)))
                        : (truncate ? _mm_cvttss_si32(single(b)) : _mm_cvtss_si32(single(b)));
    return _mm_cvtsi32_si128(value);
  };
  SimdOutcome outcome = commit_sse(context, out, source, source, {4, 0, false}, operation);
  if (outcome != SimdOutcome::kDone) return outcome;
  context.operands.write_gpr(instruction.reg, out.lane<uint64_t>(0), wide ? 8 : 4);
  return SimdOutcome::kDone;
}

// The integer source of CVTSI2SS/SD: a general register or memory, 32 or 64 bits.
SimdOutcome from_integer(Context& context, bool doubles) {
  const SimdInstruction& instruction = context.instruction;
  bool wide = instruction.rex_w;
  Xmm source;
  if (instruction.memory_operand) {
    if (!context.read_bytes(0, source.bytes.data(), wide ? 8 : 4)) return SimdOutcome::kMemoryFault;
  } else {
    uint64_t value = context.operands.read_gpr(instruction.rm);
    source.set_lane<uint64_t>(0, wide ? value : value & 0xffffffffu);
  }
  Xmm& destination = context.state.xmm[instruction.reg & 15];
  auto operation = [doubles, wide](__m128i a, __m128i b) -> __m128i {
    long long value = _mm_cvtsi128_si64(b);
    if (doubles) {
      return bits(wide ? _mm_cvtsi64_sd(dual(a), value)
                       : _mm_cvtsi32_sd(dual(a), static_cast<int>(value)));
    }
    return bits(wide ? _mm_cvtsi64_ss(single(a), value)
                     : _mm_cvtsi32_ss(single(a), static_cast<int>(value)));
  };
  return commit_sse(context, destination, destination, source, {doubles ? 8u : 4u, 1, false},
                    operation);
}

}  // namespace

SimdOutcome sse_convert(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  if (auto failed = sse_check(context)) return *failed;
  uint8_t opcode = instruction.opcode;
  uint8_t prefix = instruction.mandatory_prefix;
  bool memory = instruction.memory_operand;
  SimdState& state = context.state;
  Xmm& destination = state.xmm[instruction.reg & 15];
  Xmm source;

  switch (opcode) {
    case 0x2a: {
      if (prefix == 0xf3 || prefix == 0xf2) return from_integer(context, prefix == 0xf2);
      // CVTPI2PS/CVTPI2PD xmm, mm/m64: an MMX register source switches to MMX mode.
      if (!memory) {
        if (auto failed = mmx_enter(context)) return *failed;
      }
      if (auto failed = read_source(context, source, 8, true, false)) return *failed;
      if (prefix == 0x66) {
        return commit_sse(context, destination, destination, source, {8, 2, false},
                          [](__m128i, __m128i b) { return bits(_mm_cvtepi32_pd(b)); });
      }
      return commit_sse(context, destination, destination, source, {4, 2, false},
                        [](__m128i a, __m128i b) {
                          return merge_low(a, bits(_mm_cvtepi32_ps(_mm_move_epi64(b))));
                        });
    }
    case 0x2c:
    case 0x2d: {
      bool truncate = opcode == 0x2c;
      if (prefix == 0xf3 || prefix == 0xf2) return to_integer(context, prefix == 0xf2, truncate);
      // CVT(T)PS2PI mm, xmm/m64 and CVT(T)PD2PI mm, xmm/m128: the destination is MMX.
      if (auto failed = mmx_enter(context)) return *failed;
      bool doubles = prefix == 0x66;
      if (auto failed = read_source(context, source, doubles ? 16 : 8, false, doubles))
        return *failed;
      Xmm out;
      SimdOutcome outcome = commit_sse(
          context, out, source, source, {4, 0, false}, [doubles, truncate](__m128i, __m128i b) {
            if (doubles) return truncate ? _mm_cvttpd_epi32(dual(b)) : _mm_cvtpd_epi32(dual(b));
            __m128 low = single(_mm_move_epi64(b));
            return truncate ? _mm_cvttps_epi32(low) : _mm_cvtps_epi32(low);
          });
      if (outcome != SimdOutcome::kDone) return outcome;
      mmx_write(state, instruction.reg, out.lane<uint64_t>(0));
      return SimdOutcome::kDone;
    }
    case 0x5a: {
      switch (prefix) {
        case 0: {  // CVTPS2PD xmm, xmm/m64
          if (auto failed = read_source(context, source, 8, false, false)) return *failed;
          return commit_sse(context, destination, destination, source, {8, 2, false},
                            [](__m128i, __m128i b) { return bits(_mm_cvtps_pd(single(b))); });
        }
        case 0x66: {  // CVTPD2PS xmm, xmm/m128
          if (auto failed = read_source(context, source, 16, false, true)) return *failed;
          ResultLanes lanes{4, 2, true, LaneOperation::kNarrow, narrow_lane};
          return commit_sse(context, destination, destination, source, lanes,
                            [](__m128i, __m128i b) { return bits(_mm_cvtpd_ps(dual(b))); });
        }
        case 0xf3: {  // CVTSS2SD xmm, xmm/m32
          if (auto failed = read_source(context, source, 4, false, false)) return *failed;
          return commit_sse(
              context, destination, destination, source, {8, 1, false},
              [](__m128i a, __m128i b) { return bits(_mm_cvtss_sd(dual(a), single(b))); });
        }
        default: {  // CVTSD2SS xmm, xmm/m64
          if (auto failed = read_source(context, source, 8, false, false)) return *failed;
          ResultLanes lanes{4, 1, true, LaneOperation::kNarrow, narrow_lane};
          return commit_sse(
              context, destination, destination, source, lanes,
              [](__m128i a, __m128i b) { return bits(_mm_cvtsd_ss(single(a), dual(b))); });
        }
      }
    }
    case 0x5b: {
      if (prefix == 0xf2) return SimdOutcome::kInvalidOpcode;
      if (auto failed = read_source(context, source, 16, false, true)) return *failed;
      return commit_sse(context, destination, destination, source, {4, 4, false},
                        [prefix](__m128i, __m128i b) {
                          if (prefix == 0) return bits(_mm_cvtepi32_ps(b));
                          if (prefix == 0x66) return _mm_cvtps_epi32(single(b));
                          return _mm_cvttps_epi32(single(b));
                        });
    }
    default: {  // 0xe6
      if (prefix == 0) return SimdOutcome::kInvalidOpcode;
      if (prefix == 0xf3) {  // CVTDQ2PD xmm, xmm/m64
        if (auto failed = read_source(context, source, 8, false, false)) return *failed;
        return commit_sse(context, destination, destination, source, {8, 2, false},
                          [](__m128i, __m128i b) { return bits(_mm_cvtepi32_pd(b)); });
      }
      if (auto failed = read_source(context, source, 16, false, true)) return *failed;
      return commit_sse(
          context, destination, destination, source, {4, 2, false}, [prefix](__m128i, __m128i b) {
            return prefix == 0x66 ? _mm_cvttpd_epi32(dual(b)) : _mm_cvtpd_epi32(dual(b));
          });
    }
  }
}

}  // namespace lamina::cpu::x86::simd
