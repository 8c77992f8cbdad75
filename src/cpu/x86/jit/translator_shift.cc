// Inline SHL/SAL, SHR and SAR of a register by an immediate count, and IMUL of registers: the
// host instruction computes the result and CF; the other flags are built as shift_handlers.cc
// and muldiv_handlers.cc build them (set_logic_flags: PF, ZF, SF from the result, AF clear,
// OF per instruction, for every count: the host defines OF for a count of 1 only) and stored
// materialized. Counts that mask to zero or reach the operand width stay with the handler.
// Also SHL/SHR/SAR by CL (registers, and memory in 64-bit mode), of memory by 1 or an immediate,
// and SHLD/SHRD of 32/64-bit operands: a masked count of zero changes nothing but the 32-bit
// register's upper half (memory: the handler, which still reads the operand); 8/16-bit counts
// at or past the width (the host's CF is undefined there) and every TLB slow case: the handler.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

constexpr uint32_t kArithmeticInAh = 0xc5;  // LAHF: SF ZF - AF - PF - CF; AF left out

}  // namespace

void Translator::store_materialized_flags() {
  // LAHF gives SF, ZF, PF (and CF) of the last flag-setting host instruction.
  code_.lahf();
  code_.movzx(eax, ah);
  code_.and_(eax, kArithmeticInAh & ~1u);
  code_.or_(ecx, eax);
  code_.mov(field(layout_.flags_materialized, 8), rcx);
  code_.mov(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
  known_flags_ = KnownFlags{FlagOp::kMaterialized, 8};
}

bool Translator::emit_shift(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0xc0 && op != 0xc1 && op != 0xd0 && op != 0xd1) || in.memory) return false;
  const uint8_t operation = in.group_index();
  if (operation != 4 && operation != 5 && operation != 6 && operation != 7) return false;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  const unsigned bits = size * 8u;
  const unsigned raw = op >= 0xd0 ? 1u : static_cast<uint8_t>(in.immediate);
  const unsigned count = raw & (bits == 64 ? 63u : 31u);
  if (count == 0 || count >= bits) return false;
  const bool high_byte = size == 1 && !in.rex && in.rm >= 4 && in.rm < 8;
  if (!flags_live_ && caching_ && !high_byte) {
    // Nothing sees the flags: the shift on the cached register itself (8/16-bit shifts keep
    // the rest of it, 32-bit ones zero the upper half, as the guest's do).
    const Xbyak::Reg target = sized(cached_register(in.rm, true), size);
    switch (operation) {
      case 5: code_.shr(target, count); break;
      case 7: code_.sar(target, count); break;
      default: code_.shl(target, count); break;
    }
    cached_[static_cast<size_t>(slot_of_[in.rm])].dirty = true;
    known_flags_.reset();
    pending_rip_ += in.length;
    return true;
  }
  load_register(rax, in.rm, size, in.rex);
  code_.mov(rdx, rax);
  const Xbyak::Reg result = sized(rdx, size);
  if (!flags_live_) {
    // A later instruction of the block overwrites the flags before anything sees them.
    switch (operation) {
      case 5: code_.shr(result, count); break;
      case 7: code_.sar(result, count); break;
      default: code_.shl(result, count); break;
    }
    zero_extend(rdx, size);
    known_flags_.reset();
    store_register(in.rm, size, in.rex, rdx);
    pending_rip_ += in.length;
    return true;
  }
  // OF: SHL top bit of the result != CF; SHR the value's top bit; SAR clear.
  if (operation == 5) {
    code_.mov(rsi, rax);
    code_.shr(rsi, bits - 1);
    code_.and_(esi, 1);
  }
  switch (operation) {
    case 5: code_.shr(result, count); break;
    case 7: code_.sar(result, count); break;
    default: code_.shl(result, count); break;
  }
  code_.setc(cl);
  code_.movzx(ecx, cl);
  if (operation == 4 || operation == 6) {
    code_.mov(rsi, rdx);
    code_.shr(rsi, bits - 1);
    code_.and_(esi, 1);
    code_.xor_(esi, ecx);
  }
  if (operation != 7) {
    code_.shl(esi, 11);
    code_.or_(ecx, esi);
  }
  zero_extend(rdx, size);
  // ZF, SF, PF of the result (the shift's own are the same for a count within the width).
  code_.test(result, result);
  store_materialized_flags();
  store_register(in.rm, size, in.rex, rdx);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_multiply(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0x1af && op != 0x69 && op != 0x6b) || in.memory) return false;
  const uint8_t size = in.operand_size;
  if (!flags_live_ && caching_) {
    // Nothing sees the flags: the product straight into the cached destination register.
    const Xbyak::Reg source = sized(cached_register(in.rm, true), size);
    // A 16-bit product keeps the rest of the register: it must be loaded then too.
    const Xbyak::Reg target = sized(cached_register(in.reg, op == 0x1af || size == 2), size);
    if (op == 0x1af) {
      code_.imul(target, source);
    } else {
      // The immediate sign-extended from the operand size, as the host encoding takes it.
      const uint64_t value = in.immediate & (size == 8 ? ~uint64_t{0} : (uint64_t{1} << (size * 8)) - 1);
      code_.imul(target, source, size == 2 ? static_cast<int16_t>(value) : static_cast<int32_t>(value));
    }
    cached_[static_cast<size_t>(slot_of_[in.reg])].dirty = true;
    known_flags_.reset();
    pending_rip_ += in.length;
    return true;
  }
  load_register(rdx, in.rm, size, in.rex);
  if (op == 0x1af) {
    load_register(rcx, in.reg, size, in.rex);
  } else {
    code_.mov(rcx, size == 8 ? in.immediate : in.immediate & ((uint64_t{1} << (size * 8)) - 1));
  }
  const Xbyak::Reg result = sized(rdx, size);
  code_.imul(result, sized(rcx, size));
  if (!flags_live_) {
    zero_extend(rdx, size);
    known_flags_.reset();
    store_register(in.reg, size, in.rex, rdx);
    pending_rip_ += in.length;
    return true;
  }
  // CF = OF = the product did not fit.
  code_.seto(cl);
  code_.movzx(ecx, cl);
  code_.mov(esi, ecx);
  code_.shl(esi, 11);
  code_.or_(ecx, esi);
  zero_extend(rdx, size);
  code_.test(result, result);
  store_materialized_flags();
  store_register(in.reg, size, in.rex, rdx);
  pending_rip_ += in.length;
  return true;
}

void Translator::store_shift_flags(ShiftFlags kind, uint8_t size) {
  const unsigned bits = size * 8u;
  // ecx = CF | OF << 11; rax holds the operand before, rdx the result (both zero-extended).
  code_.setc(cl);
  code_.movzx(ecx, cl);
  switch (kind) {
    case ShiftFlags::kLeft:  // SHL: the result's top bit != CF
      code_.mov(rsi, rdx);
      code_.shr(rsi, bits - 1);
      code_.and_(esi, 1);
      code_.xor_(esi, ecx);
      break;
    case ShiftFlags::kRight:  // SHR: the operand's top bit
      code_.mov(rsi, rax);
      code_.shr(rsi, bits - 1);
      code_.and_(esi, 1);
      break;
    case ShiftFlags::kArithmetic:  // SAR: clear
      code_.xor_(esi, esi);
      break;
    case ShiftFlags::kDouble:  // SHLD/SHRD: the top bit changed
      code_.mov(rsi, rdx);
      code_.xor_(rsi, rax);
      code_.shr(rsi, bits - 1);
      code_.and_(esi, 1);
      break;
  }
  code_.shl(esi, 11);
  code_.or_(ecx, esi);
  code_.test(sized(rdx, size), sized(rdx, size));
  store_materialized_flags();
}

void Translator::load_shift_operand(const Instruction& in, uint8_t size) {
  if (!in.memory) {
    load_register(rax, in.rm, size, in.rex);
    return;
  }
  switch (size) {
    case 1: code_.movzx(eax, byte[rdi]); break;
    case 2: code_.movzx(eax, word[rdi]); break;
    case 4: code_.mov(eax, dword[rdi]); break;
    default: code_.mov(rax, qword[rdi]); break;
  }
}

void Translator::store_shift_result(const Instruction& in, uint8_t size) {
  if (!in.memory) {
    store_register(in.rm, size, in.rex, rdx);
    return;
  }
  switch (size) {
    case 1: code_.mov(byte[rdi], dl); break;
    case 2: code_.mov(word[rdi], dx); break;
    case 4: code_.mov(dword[rdi], edx); break;
    default: code_.mov(qword[rdi], rdx); break;
  }
}

bool Translator::emit_shift_count_forms(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  const bool group = op == 0xc0 || op == 0xc1 || (op >= 0xd0 && op <= 0xd3);
  const bool double_shift = op == 0x1a4 || op == 0x1a5 || op == 0x1ac || op == 0x1ad;
  if (!group && !double_shift) return false;
  // RCL/RCR read CF, ROL/ROR replace only CF and OF: the handler (immediates: emit_rotate).
  if (group && in.group_index() < 4) return false;
  const bool by_cl = op == 0xd2 || op == 0xd3 || op == 0x1a5 || op == 0x1ad;
  // Register shifts by an immediate are emit_shift's; memory operands need 64-bit mode.
  if (in.memory ? mode_ != CodeMode::k64 : !by_cl) return false;
  const uint8_t size = double_shift || (op & 1) ? in.operand_size : 1;
  // SHLD/SHRD of 16 bits by more than 16 has no defined host result.
  if (double_shift && size == 2) return false;
  const unsigned bits = size * 8u;
  const uint8_t mask = bits == 64 ? 63 : 31;
  unsigned count = 0;
  if (!by_cl) {
    count = (op == 0xd0 || op == 0xd1 ? 1u : static_cast<uint8_t>(in.immediate)) & mask;
    if (count == 0 || count >= bits) return false;
  }
  const bool observed = flags_needed(index);
  Xbyak::Label slow, zero, done;
  bool slow_used = false, zero_used = false;
  if (in.memory) {
    emit_linear_address(in, slow);
    emit_tlb_lookup(AccessType::kWrite, size, slow);
    code_.mov(rdi, rdx);
    slow_used = true;
  }
  if (by_cl) {
    code_.movzx(ecx, field(layout_.gpr + 8 * kRcx, 1));
    code_.and_(ecx, mask);
    // A zero count: a memory operand is still read (the handler); a register only zero-extended.
    if (in.memory) {
      code_.jz(slow, CodeGenerator::T_NEAR);
    } else {
      code_.jz(zero, CodeGenerator::T_NEAR);
      zero_used = true;
    }
    if (bits < 32) {
      code_.cmp(ecx, bits);
      code_.jae(slow, CodeGenerator::T_NEAR);
      slow_used = true;
    }
  } else {
    code_.mov(ecx, count);
  }
  load_shift_operand(in, size);
  code_.mov(rdx, rax);
  const Xbyak::Reg result = sized(rdx, size);
  ShiftFlags kind = ShiftFlags::kDouble;
  if (double_shift) {
    load_register(r9, in.reg, size, in.rex);
    if (op < 0x1a8) {
      code_.shld(result, sized(r9, size), cl);
    } else {
      code_.shrd(result, sized(r9, size), cl);
    }
  } else {
    switch (in.group_index()) {
      case 5: code_.shr(result, cl); kind = ShiftFlags::kRight; break;
      case 7: code_.sar(result, cl); kind = ShiftFlags::kArithmetic; break;
      default: code_.shl(result, cl); kind = ShiftFlags::kLeft; break;
    }
  }
  if (observed) {
    store_shift_flags(kind, size);
  }
  store_shift_result(in, size);
  if (zero_used) {
    code_.jmp(done, CodeGenerator::T_NEAR);
    code_.L(zero);
    // A 32-bit register destination is zero-extended even by a count of zero.
    if (size == 4) {
      code_.mov(eax, field(layout_.gpr + 8 * in.rm, 4));
      code_.mov(field(layout_.gpr + 8 * in.rm, 8), rax);
    }
  }
  if (slow_used) {
    join_slow_path(in, index, slow, done);
  } else {
    code_.L(done);
  }
  known_flags_.reset();
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
