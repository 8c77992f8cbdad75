#pragma once
// Per-opcode decoding attributes of the one-byte, 0F, 0F38 and 0F3A maps (SDM vol. 2,
// appendix A, opcode maps): which opcodes have a ModRM byte, which immediates follow, which
// are invalid in 64-bit mode, which default to 64-bit operands there.
//
// Thread-safety: immutable tables.

#include <array>
#include <cstdint>

namespace lamina::cpu::x86 {

namespace attribute {
inline constexpr uint16_t kModrm = 1u << 0;
inline constexpr uint16_t kImm8 = 1u << 1;
inline constexpr uint16_t kImm16 = 1u << 2;      // ENTER has kImm16 | kImm8 (iw, ib)
inline constexpr uint16_t kImmZ = 1u << 3;       // 16 or 32 bits by operand size
inline constexpr uint16_t kImmV = 1u << 4;       // 16, 32 or 64 bits (MOV r, imm)
inline constexpr uint16_t kFarPointer = 1u << 5; // ptr16:16 / ptr16:32
inline constexpr uint16_t kMoffs = 1u << 6;      // offset of address size
inline constexpr uint16_t kInvalid64 = 1u << 7;  // #UD in 64-bit mode
inline constexpr uint16_t kDefault64 = 1u << 8;  // 64-bit operand size in 64-bit mode, 66 gives 16
inline constexpr uint16_t kForce64 = 1u << 9;    // 64-bit operand size in 64-bit mode, 66 ignored
inline constexpr uint16_t kLockable = 1u << 10;  // LOCK allowed with a memory destination
inline constexpr uint16_t kInvalid = 1u << 11;
inline constexpr uint16_t kSimd = 1u << 12;      // belongs to the x87/MMX/SSE unit
inline constexpr uint16_t kRegisterOnly = 1u << 13;  // ModRM.mod is read as 3 (MOV CRn/DRn)
inline constexpr uint16_t kGroup = 1u << 14;     // validity depends on ModRM (see decoder.cc)
inline constexpr uint16_t kPrefix = 1u << 15;    // a legacy prefix byte
}  // namespace attribute

using OpcodeTable = std::array<uint16_t, 256>;

const OpcodeTable& one_byte_table();
const OpcodeTable& two_byte_table();
const OpcodeTable& three_byte_38_table();
const OpcodeTable& three_byte_3a_table();

}  // namespace lamina::cpu::x86
