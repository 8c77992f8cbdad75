// Which instructions the translator runs as register-only inline code, and flag liveness
// within a block. These predicates are the exact acceptance conditions of the register-only
// emitters (translator_integer.cc, translator_shift.cc, emit_extend_register): emit_block
// refuses a translation where they disagree, since a flag store left out on their word would
// otherwise be missing where a handler reads it.
//
// Liveness is per status flag (CF PF AF ZF SF OF, a mask), backwards over the block from its
// end, where all are live. Each instruction must-writes some bits and reads some: a handler, a
// form that may fault (every memory form: its slow path runs a handler) or anything not known
// here reads all; a partial writer that merges into the flags before it (ROL/ROR, INC/DEC
// keeping CF) reads the bits it keeps only when it stores its own. An instruction stores its
// lazy flags only when a bit it writes is live after it. Whatever does not store leaves the
// lazy flags in CpuState as they were: every bit live there is one it does not write, so an
// earlier producer stored it.
#include "cpu/x86/jit/translator.h"

#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86::jit {
namespace {

// LOCK on these forms is #UD and an unimplemented form raises it: the handler's business.
bool plain(const Instruction& in) { return !in.lock && in.handler != &invalid_opcode; }

bool register_move(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (op == 0x90) return !(in.rm & 8);  // NOP, PAUSE (not XCHG r8, rAX)
  if (op >= 0x88 && op <= 0x8b) return !in.memory;
  if (op >= 0xb0 && op <= 0xbf) return true;
  return (op == 0xc6 || op == 0xc7) && !in.memory && in.group_index() == 0;
}

bool lea(const Instruction& in) { return in.opcode == 0x8d && in.memory; }

bool register_extend(const Instruction& in) {
  const uint16_t op = in.opcode;
  return (op == 0x1b6 || op == 0x1b7 || op == 0x1be || op == 0x1bf) && !in.memory;
}

// ADD OR AND SUB XOR CMP TEST on registers and immediates (not ADC/SBB, which read CF).
bool register_alu(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (in.memory) return false;
  if (op < 0x40 && (op & 7) < 6) return (op >> 3) != 2 && (op >> 3) != 3;
  switch (op) {
    case 0x80: case 0x81: case 0x83: return in.group_index() != 2 && in.group_index() != 3;
    case 0x84: case 0x85: case 0xa8: case 0xa9: return true;
    case 0xf6: case 0xf7: return in.group_index() <= 1;
    default: return false;
  }
}

// SHL/SHR/SAR by an immediate count within the operand width.
bool register_shift(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0xc0 && op != 0xc1 && op != 0xd0 && op != 0xd1) || in.memory) return false;
  const uint8_t operation = in.group_index();
  if (operation < 4) return false;
  const unsigned bits = ((op & 1) ? in.operand_size : 1u) * 8u;
  const unsigned raw = op >= 0xd0 ? 1u : static_cast<uint8_t>(in.immediate);
  const unsigned count = raw & (bits == 64 ? 63u : 31u);
  return count != 0 && count < bits;
}

// OR, AND, XOR, TEST on registers: CF is known to be clear after them.
bool register_logic(const Instruction& in) {
  if (!register_alu(in)) return false;
  const uint16_t op = in.opcode;
  if (op < 0x40) return (op >> 3) == 1 || (op >> 3) == 4 || (op >> 3) == 6;
  if (op == 0x80 || op == 0x81 || op == 0x83) return in.group_index() == 1 || in.group_index() == 4 || in.group_index() == 6;
  return true;  // TEST
}

bool register_step(const Instruction& in, CodeMode mode) {
  const uint16_t op = in.opcode;
  return ((op == 0xfe || op == 0xff) && !in.memory && in.group_index() <= 1) ||
         (op >= 0x40 && op <= 0x4f && mode != CodeMode::k64);
}

// MOVSXD (64-bit mode), CBW/CWDE/CDQE, CWD/CDQ/CQO, BSWAP, NOT of a register and the hint
// NOPs (Translator::hint_nop): no flags touched (translator_data.cc).
bool register_data(const Instruction& in, CodeMode mode) {
  const uint16_t op = in.opcode;
  if (in.memory) return false;
  if (op == 0x63) return mode == CodeMode::k64;
  if (op == 0x98 || op == 0x99 || (op >= 0x1c8 && op <= 0x1cf)) return true;
  return (op == 0xf6 || op == 0xf7) && in.group_index() == 2;
}

bool register_negate(const Instruction& in) {
  return (in.opcode == 0xf6 || in.opcode == 0xf7) && in.group_index() == 3 && !in.memory;
}

bool register_multiply(const Instruction& in) {
  const uint16_t op = in.opcode;
  return (op == 0x1af || op == 0x69 || op == 0x6b) && !in.memory;
}

// The six status flags as a mask (any order: only the translator reads it).
constexpr uint8_t kCarryFlag = 1, kParityFlag = 2, kAdjustFlag = 4, kZeroFlag = 8, kSignFlag = 16,
                  kOverflowFlag = 32;
constexpr uint8_t kAllFlags = kCarryFlag | kParityFlag | kAdjustFlag | kZeroFlag | kSignFlag | kOverflowFlag;

// The flags the Jcc/SETcc/CMOVcc condition `code` reads (SDM vol. 1, appendix B).
uint8_t condition_reads(uint8_t code) {
  switch ((code & 15) >> 1) {
    case 0: return kOverflowFlag;
    case 1: return kCarryFlag;
    case 2: return kZeroFlag;
    case 3: return kCarryFlag | kZeroFlag;
    case 4: return kSignFlag;
    case 5: return kParityFlag;
    case 6: return kSignFlag | kOverflowFlag;
    default: return kZeroFlag | kSignFlag | kOverflowFlag;
  }
}

constexpr uint8_t kRotatedFlags = kCarryFlag | kOverflowFlag;
constexpr auto kAllButCarry = static_cast<uint8_t>(kAllFlags & ~kCarryFlag);

}  // namespace

bool Translator::hint_nop(const Instruction& in) {
  const uint16_t op = in.opcode;
  // The handler check keeps out whatever a prefix turns these opcodes into elsewhere.
  return (op == 0x10d || (op >= 0x118 && op <= 0x11f)) && in.handler == select_data_handler(in);
}

bool Translator::carry_alu(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (in.memory) return false;
  if (op < 0x40 && (op & 7) < 6) return (op >> 3) == 2 || (op >> 3) == 3;
  return (op == 0x80 || op == 0x81 || op == 0x83) && (in.group_index() == 2 || in.group_index() == 3);
}

bool Translator::shift_without_flags(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (in.memory || !(op == 0xc0 || op == 0xc1 || (op >= 0xd0 && op <= 0xd3))) return false;
  return in.group_index() != 2 && in.group_index() != 3;  // RCL/RCR read CF
}

bool Translator::register_only(const Instruction& in) const {
  if (!plain(in)) return false;
  return register_step(in, mode_) || register_move(in) || lea(in) || register_extend(in) ||
         register_data(in, mode_) || hint_nop(in) || carry_alu(in) || overwrites_flags(in);
}

bool Translator::overwrites_flags(const Instruction& in) {
  return plain(in) && (register_alu(in) || register_shift(in) || register_multiply(in) || register_negate(in));
}

bool Translator::leaves_flags(const Instruction& in) {
  // register_data's 0x63 is ARPL outside 64-bit mode: that one is a handler (not plain here).
  return plain(in) && (register_move(in) || lea(in) || register_extend(in) || hint_nop(in) ||
                       (register_data(in, in.mode) && (in.opcode != 0x63 || in.mode == CodeMode::k64)));
}

Translator::FlagEffect Translator::flag_effect(const Instruction& in, bool carry_known_clear) const {
  constexpr FlagEffect kUnknown{kAllFlags, 0, kAllFlags, 0};
  constexpr FlagEffect kOverwritesAll{kAllFlags, kAllFlags, 0, 0};
  if (!plain(in)) return kUnknown;
  if (leaves_flags(in)) return FlagEffect{0, 0, 0, 0};
  if (overwrites_flags(in)) return kOverwritesAll;
  if (carry_alu(in)) return FlagEffect{kAllFlags, kAllFlags, kCarryFlag, 0};
  if (register_step(in, mode_)) {
    // Stored, it writes CF too (clear: emit_step) when a logic operation came just before.
    return carry_known_clear ? kOverwritesAll : FlagEffect{kAllButCarry, kAllButCarry, 0, kCarryFlag};
  }
  const uint16_t op = in.opcode;
  if (shift_without_flags(in)) {
    const bool rotate = in.group_index() <= 1;
    // By CL, maybe zero (no flags changed); stored, they are the handler's or
    // emit_shift_count_forms', which may keep the flags before.
    if (op == 0xd2 || op == 0xd3) return FlagEffect{rotate ? kRotatedFlags : kAllFlags, 0, 0, kAllFlags};
    const unsigned bits = ((op & 1) ? in.operand_size : 1u) * 8u;
    const unsigned count = (op >= 0xd0 ? 1u : static_cast<uint8_t>(in.immediate)) & (bits == 64 ? 63u : 31u);
    // emit_rotate: CF and OF replaced in the flags before, which it materializes.
    if (rotate && count != 0) return FlagEffect{kRotatedFlags, kRotatedFlags, 0, static_cast<uint8_t>(kAllFlags & ~kRotatedFlags)};
    // A count of zero, or an 8/16-bit one past the width: the handler when stored.
    return FlagEffect{kAllFlags, 0, 0, kAllFlags};
  }
  // SETcc and CMOVcc of registers (emit_condition_forms: no fault, no handler).
  if (!in.memory && ((op >= 0x190 && op <= 0x19f) || (op >= 0x140 && op <= 0x14f)))
    return FlagEffect{0, 0, condition_reads(static_cast<uint8_t>(op & 15)), 0};
  // A handler, a memory form (its slow path may fault), a branch: all seen as they are.
  return kUnknown;
}

void Translator::compute_flag_liveness(const Block& block) {
  const auto& instructions = block.instructions;
  flag_liveness_.assign(instructions.size(), FlagLiveness{});
  // Forwards: INC/DEC after a logic operation (only flag-free register-only forms between)
  // takes CF as clear from the translator's known flags (emit_step), not from CpuState.
  bool after_logic = false;
  for (size_t index = 0; index < instructions.size(); ++index) {
    const Instruction& in = instructions[index];
    flag_liveness_[index].carry_known_clear = after_logic;
    after_logic = (plain(in) && register_logic(in)) || (after_logic && leaves_flags(in));
  }
  uint8_t live = kAllFlags;  // the block's end: the next block, a handler, anything may read them
  for (size_t index = instructions.size(); index-- > 0;) {
    FlagLiveness& entry = flag_liveness_[index];
    const FlagEffect effect = flag_effect(instructions[index], entry.carry_known_clear);
    entry.stores = (effect.writes & live) != 0;
    live = static_cast<uint8_t>((live & ~effect.kills) | effect.reads | (entry.stores ? effect.merges : 0));
  }
  flags_live_at_start_ = live;
}

bool Translator::flags_needed(size_t index) const { return flag_liveness_[index].stores; }

}  // namespace lamina::cpu::x86::jit
