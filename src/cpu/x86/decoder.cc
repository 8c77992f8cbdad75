#include "cpu/x86/decoder.h"

#include <algorithm>

#include "cpu/x86/cpu_state.h"
#include "cpu/x86/decoder_tables.h"

namespace lamina::cpu::x86 {
namespace {

using namespace attribute;

// An instruction may not be longer than 15 bytes (SDM vol. 2, 2.3.11).
constexpr size_t kMaxLength = 15;

class ByteReader {
 public:
  explicit ByteReader(std::span<const uint8_t> bytes)
      : bytes_(bytes), limit_(std::min(bytes.size(), kMaxLength)) {}
  bool available(size_t count) const { return position_ + count <= limit_; }
  uint8_t peek() const { return bytes_[position_]; }
  uint8_t next() { return bytes_[position_++]; }
  uint64_t little_endian(size_t count) {
    uint64_t value = 0;
    for (size_t i = 0; i < count; ++i) value |= uint64_t{bytes_[position_ + i]} << (8 * i);
    position_ += count;
    return value;
  }
  size_t position() const { return position_; }
  // Running out of bytes is "truncated" unless the 15-byte limit is what stopped us.
  DecodeStatus ran_out() const {
    return limit_ == kMaxLength ? DecodeStatus::kInvalid : DecodeStatus::kTruncated;
  }

 private:
  std::span<const uint8_t> bytes_;
  size_t limit_;
  size_t position_ = 0;
};

int64_t sign_extend(uint64_t value, size_t bytes) {
  // No displacement or immediate: a shift by 64 below would be undefined (UBSan stops there).
  if (bytes == 0) return 0;
  const int shift = 64 - static_cast<int>(bytes) * 8;
  return static_cast<int64_t>(value << shift) >> shift;
}

// Validity rules that depend on ModRM, mode or prefixes (SDM vol. 2, appendix A.4 groups).
bool group_valid(const Instruction& in, CodeMode mode) {
  const uint8_t reg = in.group_index();
  const bool memory = in.memory;
  switch (in.opcode) {
    case 0x62: case 0x8d: case 0xc4: case 0xc5:
      return memory;
    case 0x8c: return reg <= 5;
    case 0x8e: return reg <= 5 && reg != kCs;
    case 0x8f: return reg == 0;
    case 0xc6: case 0xc7: return reg == 0;
    case 0xfe: return reg <= 1;
    case 0xff: return reg != 7 && (memory || (reg != 3 && reg != 5));
    case 0x100: return reg <= 5;
    case 0x101:
      if (memory) return reg != 5;
      // VMCALL (C1) and VMMCALL (D9) are the hypercall instructions (system_handlers.cc).
      return reg == 4 || reg == 6 || (in.modrm == 0xf8 && mode == CodeMode::k64) ||
             in.modrm == 0xf9 || in.modrm == 0xc1 || in.modrm == 0xd9;
    case 0x10d: return memory;
    case 0x120: case 0x122: {
      const uint8_t control = in.reg;
      return control == 0 || control == 2 || control == 3 || control == 4 || control == 8;
    }
    case 0x121: case 0x123: return in.reg < 8;
    case 0x1ae:
      if (memory) return reg != 4 && reg != 5 && reg != 6;
      return reg >= 5 && in.rep == 0 && !in.operand_size_prefix;
    case 0x1b2: case 0x1b4: case 0x1b5: return memory;
    case 0x1c3: return memory && in.mandatory_prefix == 0;
    case 0x1b8: return in.mandatory_prefix == 0xf3;
    case 0x1ba: return reg >= 4;
    case 0x1c7: return memory && reg == 1;
    default: return true;
  }
}

bool lock_valid(const Instruction& in, uint16_t bits) {
  if (!(bits & kLockable) || !in.memory) return false;
  const uint8_t reg = in.group_index();
  switch (in.opcode) {
    case 0x80: case 0x81: case 0x82: case 0x83: return reg != 7;
    case 0xf6: case 0xf7: return reg == 2 || reg == 3;
    case 0xfe: case 0xff: return reg <= 1;
    case 0x1ba: return reg >= 5;
    default: return true;
  }
}

void decode_memory_operand(ByteReader& reader, Instruction& out, uint8_t rex, uint8_t mod,
                           uint8_t rm, size_t& displacement_size, bool& sib_needed) {
  out.memory = true;
  if (out.address_size == 2) {
    // 16-bit ModRM (SDM vol. 2, table 2-1).
    static constexpr uint8_t kBase16[8] = {kRbx, kRbx, kRbp, kRbp, kRsi, kRdi, kRbp, kRbx};
    static constexpr uint8_t kIndex16[8] = {kRsi, kRdi, kRsi, kRdi, kNoRegister, kNoRegister,
                                            kNoRegister, kNoRegister};
    out.base = kBase16[rm];
    out.index = kIndex16[rm];
    if (mod == 0 && rm == 6) {
      out.base = kNoRegister;
      displacement_size = 2;
    } else {
      displacement_size = mod == 1 ? 1 : mod == 2 ? 2 : 0;
    }
    if (out.base == kRbp && !out.segment_override) out.segment = kSs;
    return;
  }
  (void)reader;
  sib_needed = rm == 4;
  if (!sib_needed) {
    if (mod == 0 && rm == 5) {
      out.base = out.mode == CodeMode::k64 ? kRipRegister : kNoRegister;
      displacement_size = 4;
      return;
    }
    out.base = rm | ((rex & 1) << 3);
  }
  displacement_size = mod == 1 ? 1 : mod == 2 ? 4 : 0;
}

}  // namespace

bool is_simd_opcode(uint16_t opcode) {
  const uint16_t map = opcode & 0xff00;
  const uint8_t byte = static_cast<uint8_t>(opcode);
  if (map == kMapOneByte) return one_byte_table()[byte] & kSimd;
  if (map == kMap0F) return two_byte_table()[byte] & kSimd;
  return true;
}

DecodeStatus decode(std::span<const uint8_t> bytes, CodeMode mode, Instruction& out) {
  out = Instruction{};
  out.mode = mode;
  ByteReader reader(bytes);
  uint8_t rex = 0;
  uint8_t last_rep = 0;
  bool address_prefix = false;

  // Legacy prefixes in any order, then an optional REX immediately before the opcode.
  for (;;) {
    if (!reader.available(1)) return reader.ran_out();
    const uint8_t byte = reader.peek();
    if (mode == CodeMode::k64 && (byte & 0xf0) == 0x40) {
      rex = byte;
      reader.next();
      continue;
    }
    if (!(one_byte_table()[byte] & kPrefix)) break;
    reader.next();
    rex = 0;  // a REX followed by a legacy prefix is ignored (SDM vol. 2, 2.2.1)
    switch (byte) {
      case 0x66: out.operand_size_prefix = true; break;
      case 0x67: address_prefix = true; break;
      case 0xf0: out.lock = true; break;
      case 0xf2: case 0xf3: last_rep = byte; break;
      case 0x26: out.segment = kEs; out.segment_override = true; break;
      case 0x2e: out.segment = kCs; out.segment_override = true; break;
      case 0x36: out.segment = kSs; out.segment_override = true; break;
      case 0x3e: out.segment = kDs; out.segment_override = true; break;
      case 0x64: out.segment = kFs; out.segment_override = true; break;
      case 0x65: out.segment = kGs; out.segment_override = true; break;
    }
  }
  // In 64-bit mode the ES/CS/SS/DS overrides are ignored (SDM vol. 1, 3.3.7.1).
  if (mode == CodeMode::k64 && out.segment_override && out.segment < kFs) {
    out.segment = kDs;
    out.segment_override = false;
  }
  out.rep = last_rep;
  out.mandatory_prefix = last_rep != 0 ? last_rep : (out.operand_size_prefix ? 0x66 : 0);
  out.rex = rex != 0;
  out.rex_w = rex & 8;
  // Without ModRM, REX.B extends a register encoded in the opcode (B8+r, 50+r, ...).
  out.rm = static_cast<uint8_t>((rex & 1) << 3);

  // Opcode and map.
  uint8_t byte = reader.next();
  const OpcodeTable* table = &one_byte_table();
  uint16_t map = kMapOneByte;
  if (byte == 0x0f) {
    if (!reader.available(1)) return reader.ran_out();
    byte = reader.next();
    map = kMap0F;
    table = &two_byte_table();
    if (byte == 0x38 || byte == 0x3a) {
      map = byte == 0x38 ? kMap0F38 : kMap0F3A;
      table = byte == 0x38 ? &three_byte_38_table() : &three_byte_3a_table();
      if (!reader.available(1)) return reader.ran_out();
      byte = reader.next();
    }
  }
  out.opcode = static_cast<uint16_t>(map | byte);
  const uint16_t bits = (*table)[byte];
  if (bits & kInvalid) return DecodeStatus::kInvalid;
  if ((bits & kInvalid64) && mode == CodeMode::k64) return DecodeStatus::kInvalid;

  // Operand and address size (SDM vol. 1, 3.6 and vol. 2, 2.2.1.2).
  if (mode == CodeMode::k64) {
    if (out.rex_w || (bits & kForce64)) {
      out.operand_size = 8;
    } else if (bits & kDefault64) {
      out.operand_size = out.operand_size_prefix ? 2 : 8;
    } else {
      out.operand_size = out.operand_size_prefix ? 2 : 4;
    }
    out.address_size = address_prefix ? 4 : 8;
  } else {
    const bool big = mode == CodeMode::k32;
    out.operand_size = (big != out.operand_size_prefix) ? 4 : 2;
    out.address_size = (big != address_prefix) ? 4 : 2;
  }

  if (bits & kModrm) {
    if (!reader.available(1)) return reader.ran_out();
    out.has_modrm = true;
    out.modrm = reader.next();
    const uint8_t mod = out.modrm >> 6;
    const uint8_t rm = out.modrm & 7;
    out.reg = static_cast<uint8_t>(((out.modrm >> 3) & 7) | ((rex & 4) << 1));
    if (mod == 3 || (bits & kRegisterOnly)) {
      out.rm = static_cast<uint8_t>(rm | ((rex & 1) << 3));
    } else {
      size_t displacement_size = 0;
      bool sib = false;
      decode_memory_operand(reader, out, rex, mod, rm, displacement_size, sib);
      if (sib) {
        if (!reader.available(1)) return reader.ran_out();
        const uint8_t sib_byte = reader.next();
        out.scale = sib_byte >> 6;
        const uint8_t index = static_cast<uint8_t>(((sib_byte >> 3) & 7) | ((rex & 2) << 2));
        out.index = index == kRsp ? kNoRegister : index;
        if ((sib_byte & 7) == 5 && mod == 0) {
          out.base = kNoRegister;
          displacement_size = 4;
        } else {
          out.base = static_cast<uint8_t>((sib_byte & 7) | ((rex & 1) << 3));
        }
      }
      if ((out.base == kRsp || out.base == kRbp) && !out.segment_override) out.segment = kSs;
      if (!reader.available(displacement_size)) return reader.ran_out();
      out.displacement = sign_extend(reader.little_endian(displacement_size), displacement_size);
    }
  }

  // FF /2 /4 (near CALL/JMP) are 64-bit in 64-bit mode; FF /6 (PUSH) defaults to 64.
  if (out.opcode == 0xff && mode == CodeMode::k64) {
    const uint8_t group = out.group_index();
    if (group == 2 || group == 4) out.operand_size = 8;
    if (group == 6 && !out.rex_w) out.operand_size = out.operand_size_prefix ? 2 : 8;
  }

  // Immediates, in encoding order.
  size_t immediate_size = 0;
  if (bits & kImm16) {
    if (!reader.available(2)) return reader.ran_out();
    out.immediate = reader.little_endian(2);
  }
  if (bits & kImm8) immediate_size = 1;
  if (bits & kImmZ) immediate_size = out.operand_size == 2 ? 2 : 4;
  if (bits & kImmV) immediate_size = out.operand_size;
  if ((out.opcode == 0xf6 || out.opcode == 0xf7) && out.group_index() <= 1)
    immediate_size = out.opcode == 0xf6 ? 1 : (out.operand_size == 2 ? 2 : 4);
  if (bits & kFarPointer) {
    const size_t offset_size = out.operand_size == 2 ? 2 : 4;
    if (!reader.available(offset_size + 2)) return reader.ran_out();
    out.immediate = reader.little_endian(offset_size);
    out.immediate2 = static_cast<uint16_t>(reader.little_endian(2));
  } else if (bits & kMoffs) {
    if (!reader.available(out.address_size)) return reader.ran_out();
    out.immediate = reader.little_endian(out.address_size);
  } else if (immediate_size != 0) {
    if (!reader.available(immediate_size)) return reader.ran_out();
    const uint64_t raw = reader.little_endian(immediate_size);
    if (bits & kImm16) {
      out.immediate2 = static_cast<uint16_t>(raw);  // ENTER's nesting level
    } else if ((bits & kImmV) && immediate_size == 8) {
      out.immediate = raw;
    } else {
      out.immediate = static_cast<uint64_t>(sign_extend(raw, immediate_size));
    }
  }
  out.length = static_cast<uint8_t>(reader.position());

  if ((bits & kGroup) && !group_valid(out, mode)) return DecodeStatus::kInvalid;
  if (out.lock && !lock_valid(out, bits)) return DecodeStatus::kInvalid;
  return DecodeStatus::kOk;
}

}  // namespace lamina::cpu::x86
