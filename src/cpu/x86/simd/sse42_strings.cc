// SSE4.2 string compares PCMPESTRM/PCMPESTRI/PCMPISTRM/PCMPISTRI (SDM Vol. 2 section 4.1,
// "Imm8 Control Byte Operation") and CRC32 (F2 0F 38 F0/F1, a general-purpose instruction).

#include <cstdlib>

#include "cpu/x86/simd/sse_operands.h"

namespace lamina::cpu::x86::simd {
namespace {

struct Elements {
  int values[16] = {};
  unsigned count = 16;
};

// Reads the elements in the format of imm8[1:0]: unsigned/signed bytes/words.
Elements elements(const Xmm& source, uint8_t control) {
  Elements out;
  bool words = control & 1;
  bool is_signed = control & 2;
  out.count = words ? 8 : 16;
  for (unsigned i = 0; i < out.count; ++i) {
    if (words) {
      out.values[i] = is_signed ? int{source.lane<int16_t>(i)} : int{source.lane<uint16_t>(i)};
    } else {
      out.values[i] = is_signed ? int{static_cast<int8_t>(source.bytes[i])} : int{source.bytes[i]};
    }
  }
  return out;
}

// Implicit length: the index of the first zero element.
unsigned implicit_length(const Elements& data) {
  for (unsigned i = 0; i < data.count; ++i) {
    if (data.values[i] == 0) return i;
  }
  return data.count;
}

// Explicit length: |register| saturated to the element count (32-bit, or 64 with REX.W).
unsigned explicit_length(uint64_t value, bool wide, unsigned count) {
  int64_t length = wide ? static_cast<int64_t>(value) : int64_t{static_cast<int32_t>(value)};
  uint64_t magnitude =
      length < 0 ? 0 - static_cast<uint64_t>(length) : static_cast<uint64_t>(length);
  return magnitude > count ? count : static_cast<unsigned>(magnitude);
}

// IntRes2 of SDM Vol. 2 4.1.4-4.1.6 for `a` (the register operand, length la) and `b` (the r/m
// operand, length lb).
uint32_t aggregate(const Elements& a, unsigned la, const Elements& b, unsigned lb,
                   uint8_t control) {
  unsigned n = a.count;
  unsigned mode = (control >> 2) & 3;
  uint32_t result = 0;
  for (unsigned j = 0; j < n; ++j) {
    bool bit = false;
    switch (mode) {
      case 0:  // equal any: b[j] is one of the valid a[i]
        for (unsigned i = 0; i < la && j < lb; ++i) bit = bit || a.values[i] == b.values[j];
        break;
      case 1:  // ranges: a holds [low, high] pairs; a pair counts only when both are valid
        for (unsigned i = 0; i + 1 < la && j < lb; i += 2) {
          bit = bit || (b.values[j] >= a.values[i] && b.values[j] <= a.values[i + 1]);
        }
        break;
      case 2:  // equal each: both invalid compare true, one invalid false
        if (j >= la && j >= lb)
          bit = true;
        else if (j < la && j < lb)
          bit = a.values[j] == b.values[j];
        break;
      default: {  // equal ordered: the substring a starts at b[j]
        bit = true;
        for (unsigned i = 0, k = j; i < n - j && bit; ++i, ++k) {
          if (i >= la) break;  // a ended: matches whatever follows
          if (k >= lb)
            bit = false;  // b ended before a did
          else
            bit = a.values[i] == b.values[k];
        }
        break;
      }
    }
    if (bit) result |= 1u << j;
  }
  uint32_t all = (1u << n) - 1;
  switch ((control >> 4) & 3) {
    case 1: result = ~result & all; break;
    case 3: result ^= ((1u << lb) - 1) & all; break;  // negate the valid elements of b only
    default: break;
  }
  return result;
}

}  // namespace

SimdOutcome sse42_strings(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  if (auto failed = sse_check(context)) return *failed;
  // These forms do not require alignment of their memory operand (SDM Vol. 1 12.10.3).
  Xmm source;
  if (auto failed = read_source(context, source, 16, false, false)) return *failed;
  uint8_t control = instruction.immediate;
  SimdState& state = context.state;
  Elements a = elements(state.xmm[instruction.reg & 15], control);
  Elements b = elements(source, control);
  bool explicit_lengths = instruction.opcode == 0x60 || instruction.opcode == 0x61;
  bool index_form = instruction.opcode & 1;
  unsigned la, lb;
  if (explicit_lengths) {
    la = explicit_length(context.operands.read_gpr(0), instruction.rex_w, a.count);
    lb = explicit_length(context.operands.read_gpr(2), instruction.rex_w, a.count);
  } else {
    la = implicit_length(a);
    lb = implicit_length(b);
  }
  uint32_t result = aggregate(a, la, b, lb, control);
  unsigned n = a.count;
  if (index_form) {
    unsigned index = n;
    if (result) index = (control & 0x40) ? 31 - __builtin_clz(result) : __builtin_ctz(result);
    context.operands.write_gpr(1, index, 4);
  } else {
    Xmm mask;
    if (control & 0x40) {
      for (unsigned i = 0; i < n; ++i) {
        if (!(result & (1u << i))) continue;
        if (n == 8)
          mask.set_lane<uint16_t>(i, 0xffff);
        else
          mask.bytes[i] = 0xff;
      }
    } else {
      mask.set_lane<uint32_t>(0, result);
    }
    state.xmm[0] = mask;
  }
  // CF: any match; ZF: b shorter than n; SF: a shorter than n; OF: IntRes2[0]; AF = PF = 0.
  uint64_t rflags = context.operands.read_rflags() & ~uint64_t{0x8d5};
  if (result) rflags |= 1u << 0;
  if (lb < n) rflags |= 1u << 6;
  if (la < n) rflags |= 1u << 7;
  if (result & 1) rflags |= 1u << 11;
  context.operands.write_rflags(rflags);
  return SimdOutcome::kDone;
}

// CRC32 r32/r64, r/m8/16/32/64: CRC-32C (Castagnoli, reflected polynomial 82F63B78h) over the
// source bytes, little-endian, continuing from the destination's low 32 bits.
SimdOutcome crc32(Context& context) {
  const SimdInstruction& instruction = context.instruction;
  unsigned size = instruction.opcode == 0xf0        ? 1
                  : instruction.rex_w               ? 8
                  : instruction.operand_size_prefix ? 2
                                                    : 4;
  uint64_t data = 0;
  if (instruction.memory_operand) {
    if (!context.read_bytes(0, &data, size)) return SimdOutcome::kMemoryFault;
  } else if (size == 1 && !instruction.rex && instruction.rm >= 4 && instruction.rm < 8) {
    data = (context.operands.read_gpr(instruction.rm - 4) >> 8) & 0xff;  // AH, CH, DH, BH
  } else {
    data = context.operands.read_gpr(instruction.rm);
  }
  uint32_t crc = static_cast<uint32_t>(context.operands.read_gpr(instruction.reg));
  for (unsigned i = 0; i < size; ++i) {
    crc ^= static_cast<uint8_t>(data >> (8 * i));
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
  }
  context.operands.write_gpr(instruction.reg, crc, instruction.rex_w ? 8 : 4);
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
