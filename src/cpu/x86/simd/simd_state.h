#pragma once
// SimdState: the architectural x87, MMX and SSE state of one vCPU (Intel SDM Vol. 1 ch. 8-11).
//
// Ownership: a plain value owned by the vCPU. Thread-safety: used only by its vCPU's thread.

#include <array>
#include <cstdint>
#include <cstring>

namespace lamina::cpu::x86 {

// One 80-bit x87 register in the double-extended format: 64-bit significand with explicit
// integer bit, then sign (bit 15) and 15-bit biased exponent. The layout matches the host's
// `long double` and the 10-byte memory format, so it can be copied to and from both.
struct X87Register {
  uint64_t significand = 0;
  uint16_t sign_exponent = 0;

  bool operator==(const X87Register&) const = default;
};

// One 128-bit XMM register as little-endian bytes; lanes are read and written with memcpy.
struct Xmm {
  std::array<uint8_t, 16> bytes{};

  template <typename T>
  T lane(unsigned index) const {
    T value;
    std::memcpy(&value, bytes.data() + index * sizeof(T), sizeof(T));
    return value;
  }
  template <typename T>
  void set_lane(unsigned index, T value) {
    std::memcpy(bytes.data() + index * sizeof(T), &value, sizeof(T));
  }
  bool operator==(const Xmm&) const = default;
};

// Status word bits (SDM Vol. 1 8.1.3).
inline constexpr uint16_t kX87Invalid = 1u << 0;
inline constexpr uint16_t kX87Denormal = 1u << 1;
inline constexpr uint16_t kX87ZeroDivide = 1u << 2;
inline constexpr uint16_t kX87Overflow = 1u << 3;
inline constexpr uint16_t kX87Underflow = 1u << 4;
inline constexpr uint16_t kX87Precision = 1u << 5;
inline constexpr uint16_t kX87StackFault = 1u << 6;
inline constexpr uint16_t kX87ErrorSummary = 1u << 7;
inline constexpr uint16_t kX87C0 = 1u << 8;
inline constexpr uint16_t kX87C1 = 1u << 9;
inline constexpr uint16_t kX87C2 = 1u << 10;
inline constexpr uint16_t kX87C3 = 1u << 14;
inline constexpr uint16_t kX87Busy = 1u << 15;
inline constexpr uint16_t kX87ConditionCodes = kX87C0 | kX87C1 | kX87C2 | kX87C3;
inline constexpr uint16_t kX87ExceptionFlags = 0x3f;

// MXCSR bits (SDM Vol. 1 10.2.3).
inline constexpr uint32_t kMxcsrFlags = 0x3f;
inline constexpr uint32_t kMxcsrDenormalsAreZeros = 1u << 6;
inline constexpr uint32_t kMxcsrMasks = 0x1f80;
inline constexpr uint32_t kMxcsrFlushToZero = 1u << 15;
// Bits a guest may set (MXCSR_MASK reported by FXSAVE); others #GP on LDMXCSR/FXRSTOR.
inline constexpr uint32_t kMxcsrWritable = 0xffff;
inline constexpr uint32_t kMxcsrDefault = 0x1f80;

struct SimdState {
  // Physical registers R0-R7; ST(i) is physical (TOP + i) mod 8. MMX register i aliases the
  // significand of physical register i (SDM Vol. 1 9.5).
  std::array<X87Register, 8> x87{};
  uint16_t control = 0x037f;  // FNINIT value: all exceptions masked, extended precision, nearest
  uint16_t status = 0;        // includes TOP in bits 11-13
  // Abridged tag: bit i set when physical register i is in use. The full two-bit tags of
  // FNSTENV/FNSAVE are computed from the register contents, as the hardware does.
  uint8_t tag_valid = 0;
  uint16_t last_opcode = 0;  // 11 bits: low 3 bits of the first opcode byte, then ModRM
  uint64_t last_instruction = 0;
  uint64_t last_data = 0;

  std::array<Xmm, 16> xmm{};
  uint32_t mxcsr = kMxcsrDefault;

  unsigned top() const { return (status >> 11) & 7; }
  void set_top(unsigned top) {
    status = static_cast<uint16_t>((status & ~0x3800u) | ((top & 7) << 11));
  }
  unsigned physical(unsigned stack_index) const { return (top() + stack_index) & 7; }
  X87Register& st(unsigned stack_index) { return x87[physical(stack_index)]; }
  bool st_empty(unsigned stack_index) const { return !(tag_valid & (1u << physical(stack_index))); }
};

// Power-on/RESET and INIT state of the unit (SDM Vol. 3 9.1.1 table 9-1): x87 as after FNINIT,
// XMM registers zero, MXCSR 1F80h.
void reset(SimdState& state);

// The full two-bit tag word as FNSTENV/FNSAVE store it (00 valid, 01 zero, 10 special, 11 empty).
uint16_t full_tag_word(const SimdState& state);

}  // namespace lamina::cpu::x86
