#pragma once
// LazyFlags: the six arithmetic flags (CF PF AF ZF SF OF) kept as the last operation, its
// operands and result, and computed only when something reads them (Jcc, PUSHF, ADC...).
//
// Ownership: plain data inside CpuState. Thread-safety: that of its CpuState.

#include <bit>
#include <cstdint>

namespace lamina::cpu::x86 {

enum class FlagOp : uint8_t { kMaterialized, kAdd, kAdc, kSub, kSbb, kLogic, kInc, kDec };

struct LazyFlags {
  uint64_t result = 0;
  uint64_t first = 0;   // destination operand before the operation
  uint64_t second = 0;  // source operand
  uint64_t materialized = 0;  // the flags themselves when op == kMaterialized
  FlagOp op = FlagOp::kMaterialized;
  uint8_t size = 8;     // operand size in bytes
  bool carry_in = false;  // ADC/SBB carry; INC/DEC: the preserved CF

  void set(FlagOp operation, uint8_t bytes, uint64_t value, uint64_t destination,
           uint64_t source, bool carry = false) {
    op = operation;
    size = bytes;
    result = value;
    first = destination;
    second = source;
    carry_in = carry;
  }
  void set_materialized(uint64_t bits) {
    op = FlagOp::kMaterialized;
    materialized = bits;
  }

  uint64_t mask() const { return size == 8 ? ~0ull : (1ull << (size * 8)) - 1; }
  uint64_t sign_bit() const { return 1ull << (size * 8 - 1); }

  [[gnu::always_inline]] bool cf() const {
    const uint64_t m = mask();
    switch (op) {
      case FlagOp::kMaterialized: return materialized & 1;
      case FlagOp::kAdd: return (result & m) < (first & m);
      case FlagOp::kAdc: return carry_in ? (result & m) <= (first & m) : (result & m) < (first & m);
      case FlagOp::kSub: return (first & m) < (second & m);
      case FlagOp::kSbb: return carry_in ? (first & m) <= (second & m) : (first & m) < (second & m);
      case FlagOp::kLogic: return false;
      case FlagOp::kInc:
      case FlagOp::kDec: return carry_in;
    }
    return false;
  }
  [[gnu::always_inline]] bool zf() const {
    return op == FlagOp::kMaterialized ? (materialized >> 6) & 1 : (result & mask()) == 0;
  }
  [[gnu::always_inline]] bool sf() const {
    return op == FlagOp::kMaterialized ? (materialized >> 7) & 1 : (result & sign_bit()) != 0;
  }
  bool pf() const {
    if (op == FlagOp::kMaterialized) return (materialized >> 2) & 1;
    return (std::popcount(static_cast<uint8_t>(result)) & 1) == 0;
  }
  bool af() const {
    switch (op) {
      case FlagOp::kMaterialized: return (materialized >> 4) & 1;
      case FlagOp::kLogic: return false;
      case FlagOp::kInc: return (result & 0xf) == 0;
      case FlagOp::kDec: return (result & 0xf) == 0xf;
      default: return ((first ^ second ^ result) & 0x10) != 0;
    }
  }
  [[gnu::always_inline]] bool of() const {
    const uint64_t s = sign_bit();
    switch (op) {
      case FlagOp::kMaterialized: return (materialized >> 11) & 1;
      case FlagOp::kAdd:
      case FlagOp::kAdc: return ((first ^ result) & (second ^ result) & s) != 0;
      case FlagOp::kSub:
      case FlagOp::kSbb: return ((first ^ second) & (first ^ result) & s) != 0;
      case FlagOp::kLogic: return false;
      case FlagOp::kInc: return (result & mask()) == s;
      case FlagOp::kDec: return (result & mask()) == s - 1;
    }
    return false;
  }

  // The flags as RFLAGS bits (only the arithmetic six).
  uint64_t materialize() const {
    if (op == FlagOp::kMaterialized) return materialized;
    return (cf() ? 1u : 0u) | (pf() ? 4u : 0u) | (af() ? 0x10u : 0u) | (zf() ? 0x40u : 0u) |
           (sf() ? 0x80u : 0u) | (of() ? 0x800u : 0u);
  }

  // Jcc/SETcc/CMOVcc condition by its 4-bit encoding (SDM vol. 1, appendix B).
  [[gnu::always_inline]] bool condition(uint8_t code) const {
    bool value = false;
    switch (code >> 1) {
      case 0: value = of(); break;
      case 1: value = cf(); break;
      case 2: value = zf(); break;
      case 3: value = cf() || zf(); break;
      case 4: value = sf(); break;
      case 5: value = pf(); break;
      case 6: value = sf() != of(); break;
      case 7: value = zf() || (sf() != of()); break;
    }
    return (code & 1) ? !value : value;
  }
};

}  // namespace lamina::cpu::x86
