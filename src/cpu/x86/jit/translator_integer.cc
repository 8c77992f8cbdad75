// Inline integer forms: MOV between registers and from immediates, the register forms of
// ADD/OR/AND/SUB/XOR/CMP/TEST, INC/DEC and LEA. Their results and lazy flags are bit for bit
// what alu_handlers.cc/data_handlers.cc store; none of them can fault.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;

uint64_t size_mask(uint8_t size) { return size == 8 ? ~uint64_t{0} : (uint64_t{1} << (size * 8)) - 1; }

// ALU operation numbers as in the opcode (ADD OR ADC SBB AND SUB XOR CMP) plus 8 for TEST;
// ADC and SBB (which read the carry) stay with their handlers.
bool inlined_operation(int operation) { return operation != 2 && operation != 3; }

FlagOp flag_op(int operation) {
  switch (operation) {
    case 0: return FlagOp::kAdd;
    case 5: case 7: return FlagOp::kSub;
    default: return FlagOp::kLogic;
  }
}

}  // namespace

bool Translator::emit_move(const Instruction& in) {
  const uint16_t op = in.opcode;
  // NOP and PAUSE (90 without REX.B, which makes it XCHG r8, rAX): only RIP moves.
  if (op == 0x90 && !(in.rm & 8)) {
    pending_rip_ += in.length;
    return true;
  }
  if ((op == 0x88 || op == 0x89 || op == 0x8a || op == 0x8b) && !in.memory) {
    const uint8_t size = (op & 1) ? in.operand_size : 1;
    const bool to_rm = op == 0x88 || op == 0x89;
    const uint8_t source = to_rm ? in.reg : in.rm, destination = to_rm ? in.rm : in.reg;
    if (caching_ && !high_byte(source, size, in.rex) && !high_byte(destination, size, in.rex)) {
      // One host MOV between the cached registers (8/16-bit ones keep the rest of the
      // destination, which is loaded then; 32-bit ones zero its upper half, as the guest's do).
      const Xbyak::Reg64 from = cached_register(source, true);
      const Xbyak::Reg64 to = cached_register(destination, size <= 2);
      code_.mov(sized(to, size), sized(from, size));
      mark_written(destination);
      pending_rip_ += in.length;
      return true;
    }
    load_register(rax, source, size, in.rex);
    store_register(destination, size, in.rex, rax);
    pending_rip_ += in.length;
    return true;
  }
  if (op >= 0xb0 && op <= 0xbf) {
    const uint8_t size = op >= 0xb8 ? in.operand_size : 1;
    const uint8_t index = static_cast<uint8_t>((op & 7) | (in.rm & 8));
    move_immediate(index, size, in.rex, in.immediate & size_mask(size));
    pending_rip_ += in.length;
    return true;
  }
  if ((op == 0xc6 || op == 0xc7) && !in.memory && in.group_index() == 0) {
    const uint8_t size = op == 0xc7 ? in.operand_size : 1;
    move_immediate(in.rm, size, in.rex, in.immediate & size_mask(size));
    pending_rip_ += in.length;
    return true;
  }
  return false;
}

void Translator::move_immediate(uint8_t index, uint8_t size, bool rex, uint64_t value) {
  if (caching_ && !high_byte(index, size, rex)) {
    // Straight into the cached register (8/16-bit ones keep the rest of it, loaded then).
    const Xbyak::Reg64 to = cached_register(index, size <= 2);
    if (size == 8) {
      code_.mov(to, value);
    } else {
      code_.mov(sized(to, size), static_cast<uint32_t>(value));
    }
    mark_written(index);
    return;
  }
  code_.mov(rax, value);
  store_register(index, size, rex, rax);
}

bool Translator::emit_alu(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (in.memory) return false;
  if (op < 0x40 && (op & 7) < 6) {
    const int operation = op >> 3;
    if (!inlined_operation(operation)) return false;
    const uint8_t size = (op & 1) ? in.operand_size : 1;
    const bool writes = operation != 7;
    if (!flags_live_ && caching_) {
      // Nothing sees the flags: the operation on the cached registers themselves.
      const bool register_second = (op & 7) < 4;
      const bool to_rm = (op & 7) < 2;
      if (emit_alu_on_host(operation, size, register_second ? (to_rm ? in.rm : in.reg) : uint8_t{kRax},
                           register_second ? in.rex : false, to_rm ? in.reg : in.rm,
                           register_second ? std::nullopt : std::optional<uint64_t>(in.immediate))) {
        pending_rip_ += in.length;
        return true;
      }
    }
    switch (op & 7) {
      case 0: case 1:  // r/m op= reg
        load_register(rax, in.rm, size, in.rex);
        load_register(rcx, in.reg, size, in.rex);
        emit_alu_operation(operation, size, writes, in.rm, in.rex);
        note_host_flags(in.rm, size, in.rex);
        break;
      case 2: case 3:  // reg op= r/m
        load_register(rax, in.reg, size, in.rex);
        load_register(rcx, in.rm, size, in.rex);
        emit_alu_operation(operation, size, writes, in.reg, in.rex);
        note_host_flags(in.reg, size, in.rex);
        break;
      default:  // AL/eAX op= imm
        load_register(rax, kRax, size, false);
        code_.mov(rcx, in.immediate & size_mask(size));
        emit_alu_operation(operation, size, writes, kRax, false);
        note_host_flags(kRax, size, false);
        break;
    }
    pending_rip_ += in.length;
    return true;
  }
  int operation = -1;
  uint8_t size = in.operand_size;
  bool immediate = true;
  uint8_t destination = in.rm;
  bool rex = in.rex;
  switch (op) {
    case 0x80: case 0x81: case 0x83:
      operation = in.group_index();
      if (op == 0x80) size = 1;
      break;
    case 0x84: case 0x85:
      operation = 8;
      immediate = false;
      if (op == 0x84) size = 1;
      break;
    case 0xa8: case 0xa9:
      operation = 8;
      destination = kRax;
      rex = false;
      if (op == 0xa8) size = 1;
      break;
    case 0xf6: case 0xf7:
      if (in.group_index() > 1) return false;  // NOT, NEG, MUL, DIV...
      operation = 8;
      if (op == 0xf6) size = 1;
      break;
    default: return false;
  }
  if (!inlined_operation(operation)) return false;
  if (!flags_live_ && caching_ &&
      emit_alu_on_host(operation, size, destination, rex, in.reg,
                       immediate ? std::optional<uint64_t>(in.immediate) : std::nullopt)) {
    pending_rip_ += in.length;
    return true;
  }
  load_register(rax, destination, size, rex);
  if (immediate) {
    code_.mov(rcx, in.immediate & size_mask(size));
  } else {
    load_register(rcx, in.reg, size, in.rex);
  }
  emit_alu_operation(operation, size, operation != 7 && operation != 8, destination, rex);
  note_host_flags(destination, size, rex);
  pending_rip_ += in.length;
  return true;
}

// rax: first operand, rcx: second (both zero-extended); result into rdx, flags stored, the
// destination written when `writes`.
void Translator::emit_alu_operation(int operation, uint8_t size, bool writes, uint8_t destination,
                                    bool destination_rex) {
  code_.mov(rdx, rax);
  const Xbyak::Reg result = sized(rdx, size);
  const Xbyak::Reg second = sized(rcx, size);
  switch (operation) {
    case 0: code_.add(result, second); break;
    case 1: code_.or_(result, second); break;
    case 4: case 8: code_.and_(result, second); break;
    case 5: case 7: code_.sub(result, second); break;
    case 6: code_.xor_(result, second); break;
    default: break;
  }
  // A 32-bit operation has zeroed the upper half already.
  if (size != 4) zero_extend(rdx, size);
  store_flags(flag_op(operation), size, false);
  if (writes) store_register(destination, size, destination_rex, rdx);
}

bool Translator::emit_alu_on_host(int operation, uint8_t size, uint8_t destination, bool destination_rex,
                                  uint8_t source, std::optional<uint64_t> immediate) {
  // AH-BH are not host registers of their own.
  const auto high_byte = [&](uint8_t index) { return size == 1 && !destination_rex && index >= 4 && index < 8; };
  if (high_byte(destination) || (!immediate && high_byte(source))) return false;
  if (immediate && size == 8 && static_cast<int64_t>(*immediate) != static_cast<int32_t>(*immediate)) return false;
  // CMP and TEST only set flags, which nothing sees (but a following INC/DEC knows CF clear).
  const auto forget_flags = [&] {
    if (flag_op(operation) == FlagOp::kLogic) {
      known_flags_ = KnownFlags{FlagOp::kLogic, size};
    } else {
      known_flags_.reset();
    }
  };
  if (operation == 7 || operation == 8) {
    forget_flags();
    return true;
  }
  const Xbyak::Reg64 target = cached_register(destination, true);
  const Xbyak::Reg first = sized(target, size);
  const auto apply = [&](const auto& second) {
    switch (operation) {
      case 0: code_.add(first, second); break;
      case 1: code_.or_(first, second); break;
      case 4: code_.and_(first, second); break;
      case 5: code_.sub(first, second); break;
      default: code_.xor_(first, second); break;
    }
  };
  if (immediate) {
    // The immediate as the host encoding takes it: sign-extended from the operand size.
    const uint64_t value = *immediate & size_mask(size);
    int32_t encoded = static_cast<int32_t>(value);
    if (size == 1) encoded = static_cast<int8_t>(value);
    if (size == 2) encoded = static_cast<int16_t>(value);
    apply(static_cast<uint32_t>(encoded));
  } else {
    apply(sized(cached_register(source, true), size));
  }
  // 8/16-bit host operations keep the rest of the register as the guest's do; 32-bit ones
  // zero the upper half as the guest's do (SDM vol. 1, 3.4.1.1).
  cached_[static_cast<size_t>(slot_of_[destination])].dirty = true;
  forget_flags();
  return true;
}

bool Translator::emit_step(const Instruction& in) {
  const uint16_t op = in.opcode;
  uint8_t size = in.operand_size;
  uint8_t index = in.rm;
  bool rex = in.rex;
  bool increment = true;
  if ((op == 0xfe || op == 0xff) && !in.memory && in.group_index() <= 1) {
    if (op == 0xfe) size = 1;
    increment = in.group_index() == 0;
  } else if (op >= 0x40 && op <= 0x4f && mode_ != CodeMode::k64) {
    index = op & 7;
    rex = false;
    increment = op < 0x48;
  } else {
    return false;
  }
  const bool high_byte = size == 1 && !rex && index >= 4 && index < 8;
  if (!high_byte && defers_step_flags()) {
    // The counter of a one-block loop: the step on the cached register, its flags left in the
    // host flags for the branch and stored only on the loop's ways out.
    const Xbyak::Reg target = sized(cached_register(index, true), size);
    if (increment) {
      code_.add(target, 1);
    } else {
      code_.sub(target, 1);
    }
    cached_[static_cast<size_t>(slot_of_[index])].dirty = true;
    deferred_step_ = DeferredStep{index, size, increment};
    known_flags_ = KnownFlags{increment ? FlagOp::kInc : FlagOp::kDec, size};
    pending_rip_ += in.length;
    return true;
  }
  if (!flags_live_ && caching_ && !high_byte) {
    // Nothing sees the flags: the step on the cached register itself; the lazy flags in
    // CpuState stay those of an earlier producer, unknown here from now on.
    const Xbyak::Reg target = sized(cached_register(index, true), size);
    if (increment) {
      code_.add(target, 1);
    } else {
      code_.sub(target, 1);
    }
    mark_written(index);
    known_flags_.reset();
    pending_rip_ += in.length;
    return true;
  }
  // INC/DEC keep CF: carry_in is the carry of whatever set the flags before (not needed when
  // a later instruction overwrites the flags first).
  bool keep_carry = false;
  if (!flags_live_) {
    keep_carry = true;
  } else if (known_flags_ && (known_flags_->op == FlagOp::kInc || known_flags_->op == FlagOp::kDec)) {
    keep_carry = true;  // carry_in already holds it
  } else if (known_flags_ && known_flags_->op == FlagOp::kLogic) {
    code_.mov(field(layout_.flags_carry, 1), 0);
    keep_carry = true;
  } else if (known_flags_ && (known_flags_->op == FlagOp::kAdd || known_flags_->op == FlagOp::kSub)) {
    code_.mov(rax, field(layout_.flags_first, 8));
    code_.mov(rcx, field(layout_.flags_second, 8));
    if (known_flags_->op == FlagOp::kAdd) {
      code_.add(sized(rax, known_flags_->size), sized(rcx, known_flags_->size));
    } else {
      code_.cmp(sized(rax, known_flags_->size), sized(rcx, known_flags_->size));
    }
    code_.setc(field(layout_.flags_carry, 1));
    keep_carry = true;
  } else if (known_flags_ && known_flags_->op == FlagOp::kMaterialized) {
    code_.movzx(eax, field(layout_.flags_materialized, 1));
    code_.and_(eax, 1);
    code_.mov(field(layout_.flags_carry, 1), al);
    keep_carry = true;
  } else {
    // Maybe a C call: the cached registers it may clobber go back to CpuState first.
    forget_caller_saved_registers();
    emit_unknown_carry();
    code_.mov(field(layout_.flags_carry, 1), al);
    keep_carry = true;
  }
  load_register(rax, index, size, rex);
  emit_step(size, increment);
  store_flags(increment ? FlagOp::kInc : FlagOp::kDec, size, keep_carry);
  store_register(index, size, rex, rdx);
  note_host_flags(index, size, rex);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_lea(const Instruction& in) {
  if (in.opcode != 0x8d || !in.memory) return false;
  const auto displacement = static_cast<int64_t>(in.displacement);
  if (caching_ && in.base != kRipRegister && displacement == static_cast<int32_t>(displacement)) {
    // One host LEA over the cached registers; a 32-bit one cuts to the address size itself.
    Xbyak::RegExp address(static_cast<int32_t>(displacement));
    if (in.base < 16) address = address + cached_register(in.base, true);
    if (in.index < 16) address = address + cached_register(in.index, true) * (1 << in.scale);
    if ((in.operand_size == 8 && in.address_size == 8) || (in.operand_size == 4 && in.address_size != 2)) {
      // Straight into the destination's host register (taken after the address's, so it
      // cannot evict them): a 32-bit LEA keeps the sum's low half and zeroes the rest, as a
      // 32-bit register write does, whatever the address size.
      const Xbyak::Reg64 destination = cached_register(in.reg, false);
      if (in.operand_size == 8) {
        code_.lea(destination, code_.ptr[address]);
      } else {
        code_.lea(destination.cvt32(), code_.ptr[address]);
      }
      mark_written(in.reg);
      pending_rip_ += in.length;
      return true;
    }
    if (in.address_size == 8) {
      code_.lea(rax, code_.ptr[address]);
    } else {
      code_.lea(eax, code_.ptr[address]);
      if (in.address_size == 2) code_.movzx(eax, ax);
    }
    if (in.operand_size == 2 || (in.operand_size == 4 && in.address_size == 8)) zero_extend(rax, in.operand_size);
    store_register(in.reg, in.operand_size, in.rex, rax);
    pending_rip_ += in.length;
    return true;
  }
  // CpuCore::effective_address: displacement + base + (index << scale), cut to the address size.
  code_.mov(rax, static_cast<uint64_t>(in.displacement));
  if (in.base < 16) {
    add_guest_register(rax, in.base);
  } else if (in.base == kRipRegister) {
    code_.add(rax, field(layout_.rip, 8));
    const uint64_t after = pending_rip_ + in.length;
    code_.add(rax, static_cast<uint32_t>(after));
  }
  if (in.index < 16) {
    load_register(rcx, in.index, 8, true);
    if (in.scale != 0) code_.shl(rcx, in.scale);
    code_.add(rax, rcx);
  }
  if (in.address_size == 4) code_.mov(eax, eax);
  if (in.address_size == 2) code_.movzx(eax, ax);
  zero_extend(rax, in.operand_size);
  store_register(in.reg, in.operand_size, in.rex, rax);
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
