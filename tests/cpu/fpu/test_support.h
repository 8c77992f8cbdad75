#pragma once
// Shared pieces of the differential tests: a SimdOperands over a test buffer, the encoder that
// turns one instruction description into both host machine code and a SimdInstruction, and
// random operand values rich in special cases.

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <span>
#include <vector>

#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/simd/simd_unit.h"

namespace lamina::cpu::x86::test {

inline constexpr uint64_t kTestEffectiveAddress = 0x7000;
inline constexpr size_t kTestMemorySize = 1024;

// The core's side for the tests: memory at the effective address is `memory`; out-of-range
// accesses fault (reported, nothing copied).
class TestOperands : public SimdOperands {
 public:
  std::array<uint8_t, kTestMemorySize> memory{};
  std::array<uint64_t, 16> gpr{};
  uint64_t rflags = 0x2;
  uint64_t address = kTestEffectiveAddress;
  uint64_t instruction = 0x401000;
  bool faulted = false;

  bool read_memory(uint64_t offset, std::span<std::byte> data) override {
    if (offset + data.size() > memory.size()) return fault();
    std::memcpy(data.data(), memory.data() + offset, data.size());
    return true;
  }
  bool write_memory(uint64_t offset, std::span<const std::byte> data) override {
    if (offset + data.size() > memory.size()) return fault();
    std::memcpy(memory.data() + offset, data.data(), data.size());
    return true;
  }
  uint64_t read_gpr(uint8_t index) override { return gpr[index & 15]; }
  void write_gpr(uint8_t index, uint64_t value, uint8_t bytes) override {
    gpr[index & 15] = bytes == 8 ? value : (value & 0xffffffffu);
  }
  uint64_t effective_address() override { return address; }
  uint64_t instruction_address() override { return instruction; }
  uint64_t read_rflags() override { return rflags; }
  void write_rflags(uint64_t value) override { rflags = value; }

 private:
  bool fault() {
    faulted = true;
    return false;
  }
};

// One instruction form: enough to produce the host bytes and the decoded SimdInstruction.
struct InstructionForm {
  OpcodeMap map = OpcodeMap::kTwoByte;
  uint8_t opcode = 0;
  uint8_t prefix = 0;  // 0, 0x66, 0xf2, 0xf3
  uint8_t reg = 0;     // 0-15
  uint8_t rm = 0;      // register 0-15 when !memory
  bool memory = false;
  bool rex_w = false;
  bool operand_size_prefix = false;  // a 66 before another mandatory prefix (CRC32 r/m16)
  std::optional<uint8_t> immediate;
};

struct Encoded {
  std::vector<uint8_t> bytes;
  SimdInstruction instruction;
};

// The memory operand is always [rsi] (ModRM mod=00 rm=110) on the host.
inline Encoded encode(const InstructionForm& form) {
  Encoded out;
  if (form.operand_size_prefix && form.prefix != 0x66) out.bytes.push_back(0x66);
  if (form.prefix) out.bytes.push_back(form.prefix);
  uint8_t rex = static_cast<uint8_t>(0x40 | (form.rex_w ? 8 : 0) | ((form.reg >> 3) << 2) |
                                     (!form.memory ? (form.rm >> 3) : 0));
  if (rex != 0x40) out.bytes.push_back(rex);
  if (form.map != OpcodeMap::kOneByte) out.bytes.push_back(0x0f);
  if (form.map == OpcodeMap::kThreeByte38) out.bytes.push_back(0x38);
  if (form.map == OpcodeMap::kThreeByte3A) out.bytes.push_back(0x3a);
  out.bytes.push_back(form.opcode);
  uint8_t modrm = form.memory ? static_cast<uint8_t>(((form.reg & 7) << 3) | 6)
                              : static_cast<uint8_t>(0xc0 | ((form.reg & 7) << 3) | (form.rm & 7));
  out.bytes.push_back(modrm);
  if (form.immediate) out.bytes.push_back(*form.immediate);
  SimdInstruction& instruction = out.instruction;
  instruction.map = form.map;
  instruction.opcode = form.opcode;
  instruction.mandatory_prefix =
      form.prefix == 0x66 || form.prefix == 0xf2 || form.prefix == 0xf3 ? form.prefix : 0;
  instruction.operand_size_prefix = form.prefix == 0x66 || form.operand_size_prefix;
  instruction.rex_w = form.rex_w;
  instruction.rex = rex != 0x40;
  instruction.modrm = modrm;
  instruction.reg = form.reg;
  instruction.rm = form.memory ? 0 : form.rm;
  instruction.memory_operand = form.memory;
  instruction.immediate = form.immediate.value_or(0);
  instruction.address_size = 64;
  instruction.operand_size = form.rex_w ? 64 : (instruction.operand_size_prefix ? 16 : 32);
  // An x87 escape takes a 66h prefix as an operand-size override, not as a mandatory prefix.
  if (form.map == OpcodeMap::kOneByte) instruction.mandatory_prefix = 0;
  instruction.long_mode_64 = true;
  return out;
}

// Random values with a heavy share of special cases.
class ValueSource {
 public:
  explicit ValueSource(uint32_t seed) : random_(seed) {}

  uint64_t bits(unsigned count) {
    uint64_t value = random_();
    return count >= 64 ? value : value & ((uint64_t{1} << count) - 1);
  }
  bool chance(unsigned percent) { return random_() % 100 < percent; }
  unsigned below(unsigned limit) { return static_cast<unsigned>(random_() % limit); }

  // An IEEE binary value of `exponent_bits`/`fraction_bits` (float: 8/23, double: 11/52).
  uint64_t ieee(unsigned exponent_bits, unsigned fraction_bits) {
    uint64_t sign = bits(1) << (exponent_bits + fraction_bits);
    uint64_t max_exponent = (uint64_t{1} << exponent_bits) - 1;
    uint64_t fraction = bits(fraction_bits);
    uint64_t exponent;
    switch (below(12)) {
      case 0:
        exponent = 0;
        fraction = 0;
        break;                      // zero
      case 1: exponent = 0; break;  // denormal
      case 2:
        exponent = max_exponent;
        fraction = 0;
        break;  // infinity
      case 3:
        exponent = max_exponent;  // QNaN / indefinite
        fraction |= uint64_t{1} << (fraction_bits - 1);
        if (chance(30)) fraction = uint64_t{1} << (fraction_bits - 1);
        break;
      case 4:
        exponent = max_exponent;  // SNaN
        fraction &= ~(uint64_t{1} << (fraction_bits - 1));
        if (fraction == 0) fraction = 1;
        break;
      case 5: exponent = 1 + below(3); break;                 // tiny normal
      case 6: exponent = max_exponent - 1 - below(3); break;  // huge
      case 7:
        exponent = (max_exponent >> 1) + below(8);  // small integers
        fraction &= ~((uint64_t{1} << (fraction_bits > 8 ? fraction_bits - 8 : 0)) - 1);
        break;
      default: exponent = (max_exponent >> 1) - 40 + below(80); break;
    }
    return sign | (exponent << fraction_bits) | fraction;
  }
  uint32_t float32() { return static_cast<uint32_t>(ieee(8, 23)); }
  uint64_t float64() { return ieee(11, 52); }

  X87Register extended() {
    X87Register value;
    uint16_t sign = static_cast<uint16_t>(bits(1) << 15);
    value.significand = bits(64) | (uint64_t{1} << 63);
    unsigned exponent;
    switch (below(18)) {
      case 0:
        exponent = 0;
        value.significand = 0;
        break;
      case 1:
        exponent = 0;
        value.significand &= ~(uint64_t{1} << 63);
        break;  // denormal
      case 2:
        exponent = 0x7fff;
        value.significand = uint64_t{1} << 63;
        break;  // infinity
      case 3:
        exponent = 0x7fff;
        value.significand |= uint64_t{1} << 62;  // QNaN
        if (chance(30)) value.significand = uint64_t{3} << 62;
        break;
      case 4:
        exponent = 0x7fff;
        value.significand &= ~(uint64_t{1} << 62);  // SNaN
        if ((value.significand << 1) == 0) value.significand |= 1;
        break;
      case 5: exponent = 1 + below(64); break;
      case 6: exponent = 0x7ffe - below(64); break;
      case 7:
        exponent = 0x3fff + below(64);  // integer-valued, for FIST/FRNDINT/FBSTP
        value.significand &= ~((uint64_t{1} << (63 - std::min(63u, exponent - 0x3fff))) - 1);
        break;
      case 8: exponent = 0x3fff - 2 + below(5); break;   // near 1
      case 9: exponent = 0x3fff + 60 + below(8); break;  // near the 2^63 trig limit
      case 10: exponent = 0x3c00 + below(0x800); break;  // representable in double
      case 11: exponent = 0x3f80 + below(0x100); break;  // representable in float
      case 12:  // float/double denormal range, often with few significant bits (exact there)
        exponent = chance(50) ? 0x3f81 - below(28) : 0x3c01 - below(56);
        if (chance(50)) value.significand &= ~((uint64_t{1} << 60) - 1);
        break;
      case 13: exponent = 0x407e + below(4); break;  // near float overflow
      default: exponent = 0x3fff - 70 + below(140); break;
    }
    value.sign_exponent = static_cast<uint16_t>(sign | exponent);
    return value;
  }

  // A signed integer of `bits` with boundary values favored.
  int64_t integer(unsigned width) {
    int64_t max = width == 64 ? INT64_MAX : (int64_t{1} << (width - 1)) - 1;
    switch (below(6)) {
      case 0: return max;
      case 1: return -max - 1;
      case 2: return static_cast<int64_t>(below(5)) - 2;
      default: {
        uint64_t value = bits(width);
        if (width < 64 && (value >> (width - 1))) value |= ~uint64_t{0} << width;
        return static_cast<int64_t>(value);
      }
    }
  }

 private:
  std::mt19937_64 random_;
};

}  // namespace lamina::cpu::x86::test
