#pragma once
// Instruction: one decoded x86 instruction in the form the interpreter executes (prefixes
// applied, operand/address sizes resolved, ModRM/SIB/displacement/immediate extracted) plus
// the handler chosen for it. Decoded once per basic block and reused.
//
// Ownership: plain data. Thread-safety: immutable once decoded.

#include <cstdint>

namespace lamina::cpu::x86 {

struct CpuCore;
struct Instruction;
using Handler = void (*)(CpuCore& core, const Instruction& instruction);

// Opcode maps, stored in Instruction::opcode's high byte.
inline constexpr uint16_t kMapOneByte = 0x000, kMap0F = 0x100, kMap0F38 = 0x200,
                          kMap0F3A = 0x300;
inline constexpr uint8_t kNoRegister = 16, kRipRegister = 17;

enum class CodeMode : uint8_t { k16, k32, k64 };

struct Instruction {
  Handler handler = nullptr;
  uint64_t immediate = 0;       // zero- or sign-extended per the instruction's definition
  int64_t displacement = 0;     // sign-extended
  uint16_t immediate2 = 0;      // ENTER's level byte, a far pointer's selector
  uint16_t opcode = 0;          // map | opcode byte
  uint8_t length = 0;
  uint8_t operand_size = 4;     // bytes: 2, 4 or 8 (1 for byte forms is implied by opcode)
  uint8_t address_size = 8;     // bytes: 2, 4 or 8
  uint8_t segment = 3;          // effective segment of the memory operand (kDs default)
  uint8_t modrm = 0;
  uint8_t reg = 0;              // ModRM.reg extended by REX.R
  uint8_t rm = 0;               // ModRM.rm extended by REX.B (register form)
  uint8_t base = kNoRegister;   // memory form: base register, kRipRegister, or none
  uint8_t index = kNoRegister;  // memory form: index register or none
  uint8_t scale = 0;            // shift count 0-3
  uint8_t rep = 0;              // 0, 0xf2 or 0xf3: the last of the two that appeared
  uint8_t mandatory_prefix = 0;  // SSE form selector: last of 66/F2/F3 by the SDM rule
  CodeMode mode = CodeMode::k64;
  bool has_modrm = false;
  bool memory = false;          // ModRM.mod != 3
  bool rex = false;             // any REX prefix (selects SPL/BPL/SIL/DIL over AH..BH)
  bool rex_w = false;
  bool lock = false;
  bool operand_size_prefix = false;
  bool segment_override = false;

  uint8_t opcode_byte() const { return static_cast<uint8_t>(opcode); }
  uint16_t map() const { return opcode & 0xff00; }
  uint8_t group_index() const { return (modrm >> 3) & 7; }  // ModRM.reg without REX.R
};

}  // namespace lamina::cpu::x86
