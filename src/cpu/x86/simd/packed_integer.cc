// MMX and SSE2 packed-integer instructions on 8-byte MMX or 16-byte XMM operands (SDM Vol. 2,
// the entries of each mnemonic): unpacks, packs, compares, add/subtract (wrapping and
// saturating), multiplies, min/max, averages, logic, shifts, PSHUF*, PINSRW/PEXTRW, PMOVMSKB.

#include <algorithm>
#include <limits>
#include <type_traits>

#include "cpu/x86/simd/sse_operands.h"

namespace lamina::cpu::x86::simd {
namespace {

template <typename T, typename F>
Xmm lanes(const Xmm& a, const Xmm& b, unsigned width, F f) {
  Xmm out;
  for (unsigned i = 0; i < width / sizeof(T); ++i)
    out.set_lane<T>(i, f(a.lane<T>(i), b.lane<T>(i)));
  return out;
}

template <typename T>
T saturate(int64_t value) {
  return static_cast<T>(
      std::clamp<int64_t>(value, std::numeric_limits<T>::min(), std::numeric_limits<T>::max()));
}

template <typename T>
Xmm add_saturated(const Xmm& a, const Xmm& b, unsigned width, bool subtract) {
  return lanes<T>(a, b, width, [subtract](T x, T y) {
    return saturate<T>(subtract ? int64_t{x} - int64_t{y} : int64_t{x} + int64_t{y});
  });
}

// Interleaves the low (high) halves: PUNPCKL*/PUNPCKH*.
template <typename T>
Xmm unpack(const Xmm& a, const Xmm& b, unsigned width, bool high) {
  Xmm out;
  unsigned count = width / sizeof(T);
  unsigned base = high ? count / 2 : 0;
  for (unsigned i = 0; i < count / 2; ++i) {
    out.set_lane<T>(2 * i, a.lane<T>(base + i));
    out.set_lane<T>(2 * i + 1, b.lane<T>(base + i));
  }
  return out;
}

// PACKSS*/PACKUS*: the destination's lanes then the source's, narrowed with saturation.
template <typename Wide, typename Narrow>
Xmm pack(const Xmm& a, const Xmm& b, unsigned width) {
  Xmm out;
  unsigned count = width / sizeof(Wide);
  for (unsigned i = 0; i < count; ++i) {
    out.set_lane<Narrow>(i, saturate<Narrow>(a.lane<Wide>(i)));
    out.set_lane<Narrow>(count + i, saturate<Narrow>(b.lane<Wide>(i)));
  }
  return out;
}

// Logical/arithmetic shifts by a count; counts past the lane width give 0 (or the sign).
template <typename T>
Xmm shift(const Xmm& a, uint64_t count, unsigned width, int kind) {
  constexpr unsigned kBits = sizeof(T) * 8;
  using Signed = std::make_signed_t<T>;
  Xmm out;
  for (unsigned i = 0; i < width / sizeof(T); ++i) {
    T value = a.lane<T>(i);
    T result;
    if (kind == 0)
      result = count >= kBits ? 0 : static_cast<T>(value >> count);  // right
    else if (kind == 1)
      result = count >= kBits ? 0 : static_cast<T>(value << count);  // left
    else
      result = static_cast<T>(static_cast<Signed>(value) >> std::min<uint64_t>(count, kBits - 1));
    out.set_lane<T>(i, result);
  }
  return out;
}

Xmm shift_by_kind(const Xmm& a, uint64_t count, unsigned width, unsigned lane_bytes, int kind) {
  switch (lane_bytes) {
    case 2: return shift<uint16_t>(a, count, width, kind);
    case 4: return shift<uint32_t>(a, count, width, kind);
    default: return shift<uint64_t>(a, count, width, kind);
  }
}

Xmm byte_shift(const Xmm& a, unsigned count, bool left) {
  Xmm out;
  for (int i = 0; i < 16; ++i) {
    int from = left ? i - static_cast<int>(count) : i + static_cast<int>(count);
    out.bytes[i] = (count < 16 && from >= 0 && from < 16) ? a.bytes[from] : 0;
  }
  return out;
}

// The two-operand arithmetic/logic opcodes: destination op source.
std::optional<Xmm> binary(uint8_t opcode, const Xmm& a, const Xmm& b, unsigned width) {
  switch (opcode) {
    case 0x60: return unpack<uint8_t>(a, b, width, false);
    case 0x61: return unpack<uint16_t>(a, b, width, false);
    case 0x62: return unpack<uint32_t>(a, b, width, false);
    case 0x63: return pack<int16_t, int8_t>(a, b, width);
    case 0x64:
      return lanes<int8_t>(a, b, width,
                           [](int8_t x, int8_t y) { return static_cast<int8_t>(x > y ? -1 : 0); });
    case 0x65:
      return lanes<int16_t>(
          a, b, width, [](int16_t x, int16_t y) { return static_cast<int16_t>(x > y ? -1 : 0); });
    case 0x66:
      return lanes<int32_t>(a, b, width, [](int32_t x, int32_t y) { return x > y ? -1 : 0; });
    case 0x67: return pack<int16_t, uint8_t>(a, b, width);
    case 0x68: return unpack<uint8_t>(a, b, width, true);
    case 0x69: return unpack<uint16_t>(a, b, width, true);
    case 0x6a: return unpack<uint32_t>(a, b, width, true);
    case 0x6b: return pack<int32_t, int16_t>(a, b, width);
    case 0x6c: return unpack<uint64_t>(a, b, width, false);
    case 0x6d: return unpack<uint64_t>(a, b, width, true);
    case 0x74:
      return lanes<uint8_t>(a, b, width, [](uint8_t x, uint8_t y) {
        return static_cast<uint8_t>(x == y ? 0xff : 0);
      });
    case 0x75:
      return lanes<uint16_t>(a, b, width, [](uint16_t x, uint16_t y) {
        return static_cast<uint16_t>(x == y ? 0xffff : 0);
      });
    case 0x76:
      return lanes<uint32_t>(a, b, width, [](uint32_t x, uint32_t y) { return x == y ? ~0u : 0u; });
    case 0xd1: return shift_by_kind(a, b.lane<uint64_t>(0), width, 2, 0);
    case 0xd2: return shift_by_kind(a, b.lane<uint64_t>(0), width, 4, 0);
    case 0xd3: return shift_by_kind(a, b.lane<uint64_t>(0), width, 8, 0);
    case 0xd4: return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) { return x + y; });
    case 0xd5:
      return lanes<int16_t>(
          a, b, width, [](int16_t x, int16_t y) { return static_cast<int16_t>(int32_t{x} * y); });
    case 0xd8:
      return lanes<uint8_t>(a, b, width, [](uint8_t x, uint8_t y) {
        return static_cast<uint8_t>(x > y ? x - y : 0);
      });
    case 0xd9:
      return lanes<uint16_t>(a, b, width, [](uint16_t x, uint16_t y) {
        return static_cast<uint16_t>(x > y ? x - y : 0);
      });
    case 0xda:
      return lanes<uint8_t>(a, b, width, [](uint8_t x, uint8_t y) { return std::min(x, y); });
    case 0xdb: return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) { return x & y; });
    case 0xdc:
      return lanes<uint8_t>(a, b, width, [](uint8_t x, uint8_t y) {
        return static_cast<uint8_t>(std::min(255, x + y));
      });
    case 0xdd:
      return lanes<uint16_t>(a, b, width, [](uint16_t x, uint16_t y) {
        return static_cast<uint16_t>(std::min(65535, x + y));
      });
    case 0xde:
      return lanes<uint8_t>(a, b, width, [](uint8_t x, uint8_t y) { return std::max(x, y); });
    case 0xdf: return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) { return ~x & y; });
    case 0xe0:
      return lanes<uint8_t>(
          a, b, width, [](uint8_t x, uint8_t y) { return static_cast<uint8_t>((x + y + 1) >> 1); });
    case 0xe1: return shift_by_kind(a, b.lane<uint64_t>(0), width, 2, 2);
    case 0xe2: return shift_by_kind(a, b.lane<uint64_t>(0), width, 4, 2);
    case 0xe3:
      return lanes<uint16_t>(a, b, width, [](uint16_t x, uint16_t y) {
        return static_cast<uint16_t>((x + y + 1) >> 1);
      });
    case 0xe4:
      return lanes<uint16_t>(a, b, width, [](uint16_t x, uint16_t y) {
        return static_cast<uint16_t>((uint32_t{x} * y) >> 16);
      });
    case 0xe5:
      return lanes<int16_t>(a, b, width, [](int16_t x, int16_t y) {
        return static_cast<int16_t>((int32_t{x} * y) >> 16);
      });
    case 0xe8: return add_saturated<int8_t>(a, b, width, true);
    case 0xe9: return add_saturated<int16_t>(a, b, width, true);
    case 0xea:
      return lanes<int16_t>(a, b, width, [](int16_t x, int16_t y) { return std::min(x, y); });
    case 0xeb: return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) { return x | y; });
    case 0xec: return add_saturated<int8_t>(a, b, width, false);
    case 0xed: return add_saturated<int16_t>(a, b, width, false);
    case 0xee:
      return lanes<int16_t>(a, b, width, [](int16_t x, int16_t y) { return std::max(x, y); });
    case 0xef: return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) { return x ^ y; });
    case 0xf1: return shift_by_kind(a, b.lane<uint64_t>(0), width, 2, 1);
    case 0xf2: return shift_by_kind(a, b.lane<uint64_t>(0), width, 4, 1);
    case 0xf3: return shift_by_kind(a, b.lane<uint64_t>(0), width, 8, 1);
    case 0xf4:
      return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) {
        return (x & 0xffffffffu) * (y & 0xffffffffu);
      });
    case 0xf5: {  // PMADDWD
      Xmm out;
      for (unsigned i = 0; i < width / 4; ++i) {
        int32_t sum = static_cast<int32_t>(
            static_cast<uint32_t>(int32_t{a.lane<int16_t>(2 * i)} * b.lane<int16_t>(2 * i)) +
            static_cast<uint32_t>(int32_t{a.lane<int16_t>(2 * i + 1)} *
                                  b.lane<int16_t>(2 * i + 1)));
        out.set_lane<int32_t>(i, sum);
      }
      return out;
    }
    case 0xf6: {  // PSADBW: sum of absolute differences per 8 bytes
      Xmm out;
      for (unsigned block = 0; block < width / 8; ++block) {
        uint16_t sum = 0;
        for (unsigned i = 0; i < 8; ++i) {
          int difference = a.bytes[8 * block + i] - b.bytes[8 * block + i];
          sum = static_cast<uint16_t>(sum + (difference < 0 ? -difference : difference));
        }
        out.set_lane<uint64_t>(block, sum);
      }
      return out;
    }
    case 0xf8:
      return lanes<uint8_t>(a, b, width,
                            [](uint8_t x, uint8_t y) { return static_cast<uint8_t>(x - y); });
    case 0xf9:
      return lanes<uint16_t>(a, b, width,
                             [](uint16_t x, uint16_t y) { return static_cast<uint16_t>(x - y); });
    case 0xfa: return lanes<uint32_t>(a, b, width, [](uint32_t x, uint32_t y) { return x - y; });
    case 0xfb: return lanes<uint64_t>(a, b, width, [](uint64_t x, uint64_t y) { return x - y; });
    case 0xfc:
      return lanes<uint8_t>(a, b, width,
                            [](uint8_t x, uint8_t y) { return static_cast<uint8_t>(x + y); });
    case 0xfd:
      return lanes<uint16_t>(a, b, width,
                             [](uint16_t x, uint16_t y) { return static_cast<uint16_t>(x + y); });
    case 0xfe: return lanes<uint32_t>(a, b, width, [](uint32_t x, uint32_t y) { return x + y; });
    default: return std::nullopt;
  }
}

Xmm shuffle_words(const Xmm& source, unsigned first_lane, uint8_t order) {
  Xmm out = source;
  for (unsigned i = 0; i < 4; ++i) {
    out.set_lane<uint16_t>(first_lane + i,
                           source.lane<uint16_t>(first_lane + ((order >> (2 * i)) & 3)));
  }
  return out;
}

}  // namespace

SimdOutcome packed_integer(Context& context, bool xmm) {
  const SimdInstruction& instruction = context.instruction;
  SimdState& state = context.state;
  if (auto failed = xmm ? sse_check(context) : mmx_enter(context)) return *failed;
  unsigned width = xmm ? 16 : 8;
  uint8_t opcode = instruction.opcode;
  Xmm destination;
  if (xmm) {
    destination = state.xmm[instruction.reg & 15];
  } else {
    uint64_t bits = mmx_read(state, instruction.reg);
    std::memcpy(destination.bytes.data(), &bits, 8);
  }
  auto store = [&](const Xmm& value) {
    if (xmm) {
      state.xmm[instruction.reg & 15] = value;
    } else {
      mmx_write(state, instruction.reg, value.lane<uint64_t>(0));
    }
    return SimdOutcome::kDone;
  };

  // Immediate shifts 71/72/73 operate on the r/m register.
  if (opcode >= 0x71 && opcode <= 0x73) {
    if (instruction.memory_operand) return SimdOutcome::kInvalidOpcode;
    unsigned group = (instruction.modrm >> 3) & 7;
    Xmm value;
    if (xmm) {
      value = state.xmm[instruction.rm & 15];
    } else {
      uint64_t bits = mmx_read(state, instruction.rm);
      std::memcpy(value.bytes.data(), &bits, 8);
    }
    unsigned lane_bytes = opcode == 0x71 ? 2 : opcode == 0x72 ? 4 : 8;
    Xmm result;
    if (opcode == 0x73 && (group == 3 || group == 7)) {
      if (!xmm) return SimdOutcome::kInvalidOpcode;
      result = byte_shift(value, instruction.immediate, group == 7);
    } else if (group == 2 || group == 6 || (group == 4 && opcode != 0x73)) {
      result = shift_by_kind(value, instruction.immediate, width, lane_bytes,
                             group == 2   ? 0
                             : group == 6 ? 1
                                          : 2);
    } else {
      return SimdOutcome::kInvalidOpcode;
    }
    if (xmm) {
      state.xmm[instruction.rm & 15] = result;
    } else {
      mmx_write(state, instruction.rm, result.lane<uint64_t>(0));
    }
    return SimdOutcome::kDone;
  }
  if (opcode == 0xc5) {  // PEXTRW r32, mm/xmm, imm8 (register source only)
    if (instruction.memory_operand) return SimdOutcome::kInvalidOpcode;
    Xmm source;
    read_source(context, source, width, !xmm, false);
    uint16_t word = source.lane<uint16_t>(instruction.immediate & (xmm ? 7 : 3));
    context.operands.write_gpr(instruction.reg, word, 4);
    return SimdOutcome::kDone;
  }
  if (opcode == 0xd7) {  // PMOVMSKB r32, mm/xmm
    if (instruction.memory_operand) return SimdOutcome::kInvalidOpcode;
    Xmm source;
    read_source(context, source, width, !xmm, false);
    uint32_t mask = 0;
    for (unsigned i = 0; i < width; ++i) mask |= static_cast<uint32_t>(source.bytes[i] >> 7) << i;
    context.operands.write_gpr(instruction.reg, mask, 4);
    return SimdOutcome::kDone;
  }
  if (opcode == 0xc4) {  // PINSRW mm/xmm, r32/m16, imm8
    uint16_t word;
    if (instruction.memory_operand) {
      if (!context.read(0, word)) return SimdOutcome::kMemoryFault;
    } else {
      word = static_cast<uint16_t>(context.operands.read_gpr(instruction.rm));
    }
    destination.set_lane<uint16_t>(instruction.immediate & (xmm ? 7 : 3), word);
    return store(destination);
  }
  Xmm source;
  if (auto failed = read_source(context, source, width, !xmm, true)) return *failed;
  if (opcode == 0x70) {  // PSHUFW / PSHUFD / PSHUFHW / PSHUFLW
    uint8_t order = instruction.immediate;
    switch (xmm ? instruction.mandatory_prefix : 0) {
      case 0x66: {
        Xmm out;
        for (unsigned i = 0; i < 4; ++i)
          out.set_lane<uint32_t>(i, source.lane<uint32_t>((order >> (2 * i)) & 3));
        return store(out);
      }
      case 0xf3: return store(shuffle_words(source, 4, order));
      case 0xf2: return store(shuffle_words(source, 0, order));
      default: return store(shuffle_words(source, 0, order));
    }
  }
  std::optional<Xmm> result = binary(opcode, destination, source, width);
  if (!result) return SimdOutcome::kInvalidOpcode;
  return store(*result);
}

}  // namespace lamina::cpu::x86::simd
