// SSSE3 on MMX and XMM operands: PSHUFB, PHADD*/PHSUB*, PMADDUBSW, PSIGN*, PMULHRSW, PABS*
// (0F 38 00-0B, 1C-1E) and PALIGNR (0F 3A 0F) (SDM Vol. 2, the entries of each mnemonic).

#include <algorithm>
#include <type_traits>

#include "cpu/x86/simd/sse_operands.h"

namespace lamina::cpu::x86::simd {
namespace {

// Two's-complement negation without signed overflow (PSIGN/PABS of the most negative value
// give that value back).
template <typename T>
T negate(T value) {
  using Unsigned = std::make_unsigned_t<T>;
  return static_cast<T>(static_cast<Unsigned>(0u - static_cast<Unsigned>(value)));
}

int16_t saturate_word(int32_t value) {
  return static_cast<int16_t>(std::clamp(value, -32768, 32767));
}

// PHADD/PHSUB: pairs of the destination, then pairs of the source.
template <typename T, typename F>
Xmm horizontal(const Xmm& a, const Xmm& b, unsigned width, F f) {
  Xmm out;
  unsigned half = width / sizeof(T) / 2;
  for (unsigned i = 0; i < half; ++i) {
    out.set_lane<T>(i, f(a.lane<T>(2 * i), a.lane<T>(2 * i + 1)));
    out.set_lane<T>(half + i, f(b.lane<T>(2 * i), b.lane<T>(2 * i + 1)));
  }
  return out;
}

template <typename T>
Xmm sign(const Xmm& a, const Xmm& b, unsigned width) {
  Xmm out;
  for (unsigned i = 0; i < width / sizeof(T); ++i) {
    T value = a.lane<T>(i), selector = b.lane<T>(i);
    out.set_lane<T>(i, selector < 0 ? negate(value) : selector == 0 ? T{0} : value);
  }
  return out;
}

template <typename T>
Xmm absolute(const Xmm& b, unsigned width) {
  Xmm out;
  for (unsigned i = 0; i < width / sizeof(T); ++i) {
    T value = b.lane<T>(i);
    out.set_lane<T>(i, value < 0 ? negate(value) : value);
  }
  return out;
}

}  // namespace

SimdOutcome ssse3(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  uint8_t prefix = instruction.mandatory_prefix;
  if (prefix != 0 && prefix != 0x66) return SimdOutcome::kInvalidOpcode;
  bool xmm = prefix == 0x66;
  if (auto failed = xmm ? sse_check(context) : mmx_enter(context)) return *failed;
  unsigned width = xmm ? 16 : 8;
  SimdState& state = context.state;
  Xmm a, b;
  if (xmm) {
    a = state.xmm[instruction.reg & 15];
  } else {
    a.set_lane<uint64_t>(0, mmx_read(state, instruction.reg));
  }
  if (auto failed = read_source(context, b, width, !xmm, true)) return *failed;
  Xmm out;
  if (instruction.map == OpcodeMap::kThreeByte3A) {  // PALIGNR: (a:b) >> imm bytes
    unsigned shift = instruction.immediate;
    for (unsigned i = 0; i < width; ++i) {
      unsigned index = i + shift;
      out.bytes[i] = index < width       ? b.bytes[index]
                     : index < 2 * width ? a.bytes[index - width]
                                         : 0;
    }
  } else {
    switch (instruction.opcode) {
      case 0x00:
        for (unsigned i = 0; i < width; ++i) {
          uint8_t selector = b.bytes[i];
          out.bytes[i] = (selector & 0x80) ? 0 : a.bytes[selector & (width - 1)];
        }
        break;
      case 0x01:
        out = horizontal<int16_t>(a, b, width,
                                  [](int16_t x, int16_t y) { return static_cast<int16_t>(x + y); });
        break;
      case 0x02:
        out = horizontal<uint32_t>(a, b, width, [](uint32_t x, uint32_t y) { return x + y; });
        break;
      case 0x03:
        out = horizontal<int16_t>(a, b, width,
                                  [](int16_t x, int16_t y) { return saturate_word(x + y); });
        break;
      case 0x04:
        for (unsigned i = 0; i < width / 2; ++i) {
          int32_t sum = a.bytes[2 * i] * static_cast<int8_t>(b.bytes[2 * i]) +
                        a.bytes[2 * i + 1] * static_cast<int8_t>(b.bytes[2 * i + 1]);
          out.set_lane<int16_t>(i, saturate_word(sum));
        }
        break;
      case 0x05:
        out = horizontal<int16_t>(a, b, width,
                                  [](int16_t x, int16_t y) { return static_cast<int16_t>(x - y); });
        break;
      case 0x06:
        out = horizontal<uint32_t>(a, b, width, [](uint32_t x, uint32_t y) { return x - y; });
        break;
      case 0x07:
        out = horizontal<int16_t>(a, b, width,
                                  [](int16_t x, int16_t y) { return saturate_word(x - y); });
        break;
      case 0x08: out = sign<int8_t>(a, b, width); break;
      case 0x09: out = sign<int16_t>(a, b, width); break;
      case 0x0a: out = sign<int32_t>(a, b, width); break;
      case 0x0b:
        for (unsigned i = 0; i < width / 2; ++i) {
          int32_t product = int32_t{a.lane<int16_t>(i)} * b.lane<int16_t>(i);
          out.set_lane<int16_t>(i, static_cast<int16_t>(((product >> 14) + 1) >> 1));
        }
        break;
      case 0x1c: out = absolute<int8_t>(b, width); break;
      case 0x1d: out = absolute<int16_t>(b, width); break;
      case 0x1e: out = absolute<int32_t>(b, width); break;
      default: return SimdOutcome::kInvalidOpcode;
    }
  }
  if (xmm) {
    state.xmm[instruction.reg & 15] = out;
  } else {
    mmx_write(state, instruction.reg, out.lane<uint64_t>(0));
  }
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
