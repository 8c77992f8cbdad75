// SSE4.1 (and PCMPGTQ of SSE4.2): blends, PTEST, PMOVSX/ZX, PMULDQ/PMULLD, PCMPEQQ/PCMPGTQ,
// PACKUSDW, PMIN/PMAX, PHMINPOSUW, MOVNTDQA, ROUND*, PEXTR*/PINSR*, EXTRACTPS/INSERTPS, DPPS/
// DPPD, MPSADBW (SDM Vol. 2, the entries of each mnemonic).
#pragma GCC target("sse3,ssse3,sse4.1,sse4.2")

#include <algorithm>
#include <array>
#include <utility>

#include "cpu/x86/simd/sse_host.h"

namespace lamina::cpu::x86::simd {
namespace {

template <typename T, typename F>
Xmm lanes(const Xmm& a, const Xmm& b, F f) {
  Xmm out;
  for (unsigned i = 0; i < 16 / sizeof(T); ++i) out.set_lane<T>(i, f(a.lane<T>(i), b.lane<T>(i)));
  return out;
}

// PMOVSX/PMOVZX: widen the low elements of the source.
template <typename From, typename To>
Xmm widen(const Xmm& b) {
  Xmm out;
  for (unsigned i = 0; i < 16 / sizeof(To); ++i)
    out.set_lane<To>(i, static_cast<To>(b.lane<From>(i)));
  return out;
}

// ROUNDPS/PD/SS/SD with the imm8 (rounding mode, MXCSR.RC selection, precision suppression) as
// a compile-time constant for the host instruction.
using RoundFunction = __m128i (*)(__m128i, __m128i);
template <int kMode, int kKind>
__m128i round_with(__m128i a, __m128i b) {
  if constexpr (kKind == 0) return _mm_castps_si128(_mm_round_ps(_mm_castsi128_ps(b), kMode));
  if constexpr (kKind == 1) return _mm_castpd_si128(_mm_round_pd(_mm_castsi128_pd(b), kMode));
  if constexpr (kKind == 2) {
    return _mm_castps_si128(_mm_round_ss(_mm_castsi128_ps(a), _mm_castsi128_ps(b), kMode));
  }
  return _mm_castpd_si128(_mm_round_sd(_mm_castsi128_pd(a), _mm_castsi128_pd(b), kMode));
}
template <int kKind, size_t... kModes>
RoundFunction round_entry(unsigned mode, std::index_sequence<kModes...>) {
  static constexpr RoundFunction kTable[] = {round_with<static_cast<int>(kModes), kKind>...};
  return kTable[mode & 15];
}
RoundFunction round_function(unsigned kind, unsigned mode) {
  switch (kind) {
    case 0: return round_entry<0>(mode, std::make_index_sequence<16>());
    case 1: return round_entry<1>(mode, std::make_index_sequence<16>());
    case 2: return round_entry<2>(mode, std::make_index_sequence<16>());
    default: return round_entry<3>(mode, std::make_index_sequence<16>());
  }
}

// PEXTRB/PEXTRW/PEXTRD/PEXTRQ/EXTRACTPS: ModRM.reg is the XMM source, r/m the destination.
SimdOutcome extract(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  const Xmm& source = context.state.xmm[instruction.reg & 15];
  uint8_t index = instruction.immediate;
  uint64_t value;
  unsigned size;
  switch (instruction.opcode) {
    case 0x14:
      value = source.bytes[index & 15];
      size = 1;
      break;
    case 0x15:
      value = source.lane<uint16_t>(index & 7);
      size = 2;
      break;
    case 0x16:
      if (instruction.rex_w) {
        value = source.lane<uint64_t>(index & 1);
        size = 8;
      } else {
        value = source.lane<uint32_t>(index & 3);
        size = 4;
      }
      break;
    default:
      value = source.lane<uint32_t>(index & 3);
      size = 4;
      break;
  }
  if (instruction.memory_operand) {
    return context.write_bytes(0, &value, size) ? SimdOutcome::kDone : SimdOutcome::kMemoryFault;
  }
  context.operands.write_gpr(instruction.rm, value, size == 8 ? 8 : 4);
  return SimdOutcome::kDone;
}

SimdOutcome insert(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  Xmm& destination = context.state.xmm[instruction.reg & 15];
  uint8_t control = instruction.immediate;
  if (instruction.opcode == 0x21) {  // INSERTPS
    uint32_t value;
    if (instruction.memory_operand) {
      if (!context.read(0, value)) return SimdOutcome::kMemoryFault;
    } else {
      value = context.state.xmm[instruction.rm & 15].lane<uint32_t>((control >> 6) & 3);
    }
    destination.set_lane<uint32_t>((control >> 4) & 3, value);
    for (unsigned i = 0; i < 4; ++i) {
      if (control & (1u << i)) destination.set_lane<uint32_t>(i, 0);
    }
    return SimdOutcome::kDone;
  }
  unsigned size = instruction.opcode == 0x20 ? 1 : (instruction.rex_w ? 8 : 4);
  uint64_t value = 0;
  if (instruction.memory_operand) {
    if (!context.read_bytes(0, &value, size)) return SimdOutcome::kMemoryFault;
  } else {
    value = context.operands.read_gpr(instruction.rm);
  }
  if (size == 1)
    destination.bytes[control & 15] = static_cast<uint8_t>(value);
  else if (size == 4)
    destination.set_lane<uint32_t>(control & 3, static_cast<uint32_t>(value));
  else
    destination.set_lane<uint64_t>(control & 1, value);
  return SimdOutcome::kDone;
}

// Source size of the 0F 38 forms that read less than 16 bytes.
unsigned source_size(uint8_t opcode) {
  switch (opcode) {
    case 0x20:
    case 0x23:
    case 0x25:
    case 0x30:
    case 0x33:
    case 0x35: return 8;
    case 0x21:
    case 0x24:
    case 0x31:
    case 0x34: return 4;
    case 0x22:
    case 0x32: return 2;
    default: return 16;
  }
}

std::optional<Xmm> map38(uint8_t opcode, const Xmm& a, const Xmm& b, const Xmm& xmm0) {
  switch (opcode) {
    case 0x10: {  // PBLENDVB
      Xmm out;
      for (unsigned i = 0; i < 16; ++i)
        out.bytes[i] = (xmm0.bytes[i] & 0x80) ? b.bytes[i] : a.bytes[i];
      return out;
    }
    case 0x14:
    case 0x15: {  // BLENDVPS, BLENDVPD
      Xmm out = a;
      unsigned size = opcode == 0x14 ? 4 : 8;
      for (unsigned i = 0; i < 16 / size; ++i) {
        if (xmm0.bytes[size * (i + 1) - 1] & 0x80)
          std::memcpy(out.bytes.data() + size * i, b.bytes.data() + size * i, size);
      }
      return out;
    }
    case 0x20: return widen<int8_t, int16_t>(b);
    case 0x21: return widen<int8_t, int32_t>(b);
    case 0x22: return widen<int8_t, int64_t>(b);
    case 0x23: return widen<int16_t, int32_t>(b);
    case 0x24: return widen<int16_t, int64_t>(b);
    case 0x25: return widen<int32_t, int64_t>(b);
    case 0x30: return widen<uint8_t, uint16_t>(b);
    case 0x31: return widen<uint8_t, uint32_t>(b);
    case 0x32: return widen<uint8_t, uint64_t>(b);
    case 0x33: return widen<uint16_t, uint32_t>(b);
    case 0x34: return widen<uint16_t, uint64_t>(b);
    case 0x35: return widen<uint32_t, uint64_t>(b);
    case 0x28:
      return lanes<int64_t>(a, b, [](int64_t x, int64_t y) {
        return int64_t{static_cast<int32_t>(x)} * static_cast<int32_t>(y);
      });
    case 0x29:
      return lanes<uint64_t>(a, b, [](uint64_t x, uint64_t y) { return x == y ? ~0ull : 0ull; });
    case 0x2b: {
      Xmm out;
      for (unsigned i = 0; i < 4; ++i) {
        out.set_lane<uint16_t>(i, static_cast<uint16_t>(std::clamp(a.lane<int32_t>(i), 0, 65535)));
        out.set_lane<uint16_t>(4 + i,
                               static_cast<uint16_t>(std::clamp(b.lane<int32_t>(i), 0, 65535)));
      }
      return out;
    }
    case 0x37:
      return lanes<int64_t>(a, b,
                            [](int64_t x, int64_t y) { return x > y ? int64_t{-1} : int64_t{0}; });
    case 0x38: return lanes<int8_t>(a, b, [](int8_t x, int8_t y) { return std::min(x, y); });
    case 0x39: return lanes<int32_t>(a, b, [](int32_t x, int32_t y) { return std::min(x, y); });
    case 0x3a: return lanes<uint16_t>(a, b, [](uint16_t x, uint16_t y) { return std::min(x, y); });
    case 0x3b: return lanes<uint32_t>(a, b, [](uint32_t x, uint32_t y) { return std::min(x, y); });
    case 0x3c: return lanes<int8_t>(a, b, [](int8_t x, int8_t y) { return std::max(x, y); });
    case 0x3d: return lanes<int32_t>(a, b, [](int32_t x, int32_t y) { return std::max(x, y); });
    case 0x3e: return lanes<uint16_t>(a, b, [](uint16_t x, uint16_t y) { return std::max(x, y); });
    case 0x3f: return lanes<uint32_t>(a, b, [](uint32_t x, uint32_t y) { return std::max(x, y); });
    case 0x40: return lanes<uint32_t>(a, b, [](uint32_t x, uint32_t y) { return x * y; });
    case 0x41: {  // PHMINPOSUW: the smallest word and its (lowest) index
      unsigned index = 0;
      for (unsigned i = 1; i < 8; ++i) {
        if (b.lane<uint16_t>(i) < b.lane<uint16_t>(index)) index = i;
      }
      Xmm out;
      out.set_lane<uint16_t>(0, b.lane<uint16_t>(index));
      out.set_lane<uint16_t>(1, static_cast<uint16_t>(index));
      return out;
    }
    default: return std::nullopt;
  }
}

Xmm multiple_sad(const Xmm& a, const Xmm& b, uint8_t control) {
  Xmm out;
  unsigned source_offset = 4 * (control & 3);
  unsigned destination_offset = 4 * ((control >> 2) & 1);
  for (unsigned i = 0; i < 8; ++i) {
    unsigned sum = 0;
    for (unsigned k = 0; k < 4; ++k) {
      int difference = a.bytes[destination_offset + i + k] - b.bytes[source_offset + k];
      sum += static_cast<unsigned>(difference < 0 ? -difference : difference);
    }
    out.set_lane<uint16_t>(i, static_cast<uint16_t>(sum));
  }
  return out;
}

}  // namespace

SimdOutcome sse41(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  if (auto failed = sse_check(context)) return *failed;
  SimdState& state = context.state;
  uint8_t opcode = instruction.opcode;
  Xmm& destination = state.xmm[instruction.reg & 15];
  Xmm source;
  if (instruction.map == OpcodeMap::kThreeByte38) {
    if (opcode == 0x2a) {  // MOVNTDQA xmm, m128
      if (!instruction.memory_operand) return SimdOutcome::kInvalidOpcode;
      if (auto failed = read_source(context, source, 16, false, true)) return *failed;
      destination = source;
      return SimdOutcome::kDone;
    }
    unsigned size = source_size(opcode);
    if (auto failed = read_source(context, source, size, false, size == 16)) return *failed;
    if (opcode == 0x17) {  // PTEST: ZF = (a AND b) == 0, CF = (NOT a AND b) == 0
      bool zero = (destination.lane<uint64_t>(0) & source.lane<uint64_t>(0)) == 0 &&
                  (destination.lane<uint64_t>(1) & source.lane<uint64_t>(1)) == 0;
      bool carry = (~destination.lane<uint64_t>(0) & source.lane<uint64_t>(0)) == 0 &&
                   (~destination.lane<uint64_t>(1) & source.lane<uint64_t>(1)) == 0;
      uint64_t rflags = context.operands.read_rflags() & ~uint64_t{0x8d5};
      context.operands.write_rflags(rflags | (zero ? 0x40 : 0) | (carry ? 1 : 0));
      return SimdOutcome::kDone;
    }
    std::optional<Xmm> result = map38(opcode, destination, source, state.xmm[0]);
    if (!result) return SimdOutcome::kInvalidOpcode;
    destination = *result;
    return SimdOutcome::kDone;
  }
  // 0F 3A.
  uint8_t control = instruction.immediate;
  switch (opcode) {
    case 0x14:
    case 0x15:
    case 0x16:
    case 0x17: return extract(context);
    case 0x20:
    case 0x21:
    case 0x22: return insert(context);
    case 0x08:
    case 0x09:
    case 0x0a:
    case 0x0b: {
      unsigned kind = opcode - 0x08;
      bool doubles = kind & 1;
      bool scalar = kind >= 2;
      unsigned size = scalar ? (doubles ? 8 : 4) : 16;
      if (auto failed = read_source(context, source, size, false, !scalar)) return *failed;
      ResultLanes lanes{doubles ? 8u : 4u, 0, false};
      return commit_sse(context, destination, destination, source, lanes,
                        round_function(kind, control));
    }
    default: break;
  }
  if (auto failed = read_source(context, source, 16, false, true)) return *failed;
  switch (opcode) {
    case 0x0c:
      for (unsigned i = 0; i < 4; ++i) {
        if (control & (1u << i)) destination.set_lane<uint32_t>(i, source.lane<uint32_t>(i));
      }
      return SimdOutcome::kDone;
    case 0x0d:
      for (unsigned i = 0; i < 2; ++i) {
        if (control & (1u << i)) destination.set_lane<uint64_t>(i, source.lane<uint64_t>(i));
      }
      return SimdOutcome::kDone;
    case 0x0e:
      for (unsigned i = 0; i < 8; ++i) {
        if (control & (1u << i)) destination.set_lane<uint16_t>(i, source.lane<uint16_t>(i));
      }
      return SimdOutcome::kDone;
    case 0x40: return dot_product(context, destination, source, control, false);
    case 0x41: return dot_product(context, destination, source, control, true);
    case 0x42: destination = multiple_sad(destination, source, control); return SimdOutcome::kDone;
    default: return SimdOutcome::kInvalidOpcode;
  }
}

}  // namespace lamina::cpu::x86::simd
