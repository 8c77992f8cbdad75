// More inline register forms, chosen by the LAMINA_JIT_PROFILE counts of the default guest's
// boot, shell and mixed workloads (profile.h): MOVSXD, CBW/CWDE/CDQE, CWD/CDQ/CQO, BSWAP, NOT
// and the hint NOPs (no flags); NEG (flags as alu_handlers.cc's negate stores them); ADC/SBB
// (the carry from this block's known flag producer, else lamina_jit_carry; flags stored as
// kAdc/kSbb with the carry in); shifts and rotates whose flags a later instruction of the block
// overwrites before anything reads them (the host instruction alone); and, outside register-only
// code, SETcc/CMOVcc of registers, CMOVcc from and SETcc to memory (the condition from host flags
// recomputed from this block's known producer, else lamina_jit_condition). Results are bit for bit data_handlers.cc's.
#include "cpu/x86/jit/translator.h"

#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

uint64_t size_mask(uint8_t size) { return size == 8 ? ~uint64_t{0} : (uint64_t{1} << (size * 8)) - 1; }

void set_if(CodeGenerator& code, uint8_t condition, const Xbyak::Reg8& to) {
  switch (condition & 15) {
    case 0x0: code.seto(to); break;
    case 0x1: code.setno(to); break;
    case 0x2: code.setb(to); break;
    case 0x3: code.setnb(to); break;
    case 0x4: code.setz(to); break;
    case 0x5: code.setnz(to); break;
    case 0x6: code.setbe(to); break;
    case 0x7: code.setnbe(to); break;
    case 0x8: code.sets(to); break;
    case 0x9: code.setns(to); break;
    case 0xa: code.setp(to); break;
    case 0xb: code.setnp(to); break;
    case 0xc: code.setl(to); break;
    case 0xd: code.setnl(to); break;
    case 0xe: code.setle(to); break;
    default: code.setnle(to); break;
  }
}

void move_if(CodeGenerator& code, uint8_t condition, const Xbyak::Reg& to, const Xbyak::Reg& from) {
  switch (condition & 15) {
    case 0x0: code.cmovo(to, from); break;
    case 0x1: code.cmovno(to, from); break;
    case 0x2: code.cmovb(to, from); break;
    case 0x3: code.cmovnb(to, from); break;
    case 0x4: code.cmovz(to, from); break;
    case 0x5: code.cmovnz(to, from); break;
    case 0x6: code.cmovbe(to, from); break;
    case 0x7: code.cmovnbe(to, from); break;
    case 0x8: code.cmovs(to, from); break;
    case 0x9: code.cmovns(to, from); break;
    case 0xa: code.cmovp(to, from); break;
    case 0xb: code.cmovnp(to, from); break;
    case 0xc: code.cmovl(to, from); break;
    case 0xd: code.cmovnl(to, from); break;
    case 0xe: code.cmovle(to, from); break;
    default: code.cmovnle(to, from); break;
  }
}

}  // namespace

void Translator::set_condition(uint8_t condition, const Xbyak::Reg8& to) { set_if(code_, condition, to); }

bool Translator::emit_data(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (in.memory && !hint_nop(in)) return false;
  if (hint_nop(in)) {
    pending_rip_ += in.length;  // no memory access (SDM vol. 2, NOP)
    return true;
  }
  if (op == 0x63 && mode_ == CodeMode::k64) {
    // move_sign_extend_dword: 64-bit sign-extends the low dword, 32/16-bit is a MOV.
    const uint8_t size = in.operand_size;
    if (caching_ && size == 8) {
      // One host MOVSXD between the cached registers (the source is taken first, so the
      // destination's slot cannot evict it).
      const Xbyak::Reg64 source = cached_register(in.rm, true);
      const Xbyak::Reg64 destination = cached_register(in.reg, false);
      code_.movsxd(destination, source.cvt32());
      mark_written(in.reg);
    } else {
      load_register(rax, in.rm, size == 8 ? 4 : size, in.rex);
      if (size == 8) code_.movsxd(rax, eax);
      store_register(in.reg, size, in.rex, rax);
    }
  } else if (op == 0x98) {
    switch (in.operand_size) {
      case 2: load_register(rax, kRax, 1, false); code_.movsx(eax, al); break;
      case 4: load_register(rax, kRax, 2, false); code_.movsx(eax, ax); break;
      default:
        if (caching_) {
          const Xbyak::Reg64 accumulator = cached_register(kRax, true);
          code_.movsxd(accumulator, accumulator.cvt32());
          mark_written(kRax);
          pending_rip_ += in.length;
          return true;
        }
        load_register(rax, kRax, 4, false);
        code_.movsxd(rax, eax);
        break;
    }
    store_register(kRax, in.operand_size, false, rax);
  } else if (op == 0x99) {
    const uint8_t size = in.operand_size;
    load_register(rax, kRax, size, false);
    // RDX = the sign of rAX, all ones or zero.
    switch (size) {
      case 2: code_.movsx(edx, ax); code_.sar(edx, 15); code_.movzx(edx, dx); break;
      case 4: code_.mov(edx, eax); code_.sar(edx, 31); break;
      default: code_.mov(rdx, rax); code_.sar(rdx, 63); break;
    }
    store_register(kRdx, size, false, rdx);
  } else if (op >= 0x1c8 && op <= 0x1cf) {
    const auto index = static_cast<uint8_t>((op & 7) | (in.rm & 8));
    const uint8_t size = in.operand_size;
    if (size == 2) {
      code_.xor_(eax, eax);  // undefined; zero like data_handlers.cc's byte_swap
    } else {
      load_register(rax, index, size, false);
      if (size == 8) {
        code_.bswap(rax);
      } else {
        code_.bswap(eax);
      }
    }
    store_register(index, size, false, rax);
  } else if ((op == 0xf6 || op == 0xf7) && in.group_index() == 2) {
    const uint8_t size = op == 0xf6 ? 1 : in.operand_size;
    if (caching_ && !high_byte(in.rm, size, in.rex)) {
      // On the cached register itself (8/16-bit ones keep the rest of it, 32-bit ones zero it).
      code_.not_(sized(cached_register(in.rm, true), size));
      mark_written(in.rm);
    } else {
      load_register(rax, in.rm, size, in.rex);
      code_.not_(sized(rax, size));  // a 32-bit NOT zero-extends, as store_register expects
      store_register(in.rm, size, in.rex, rax);
    }
  } else {
    return false;
  }
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_negate(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0xf6 && op != 0xf7) || in.group_index() != 3 || in.memory) return false;
  const uint8_t size = op == 0xf6 ? 1 : in.operand_size;
  // negate: result 0 - a, stored as SUB with first 0 and second a.
  load_register(rcx, in.rm, size, in.rex);
  code_.xor_(eax, eax);
  emit_alu_operation(5, size, true, in.rm, in.rex);
  note_host_flags(in.rm, size, in.rex);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_shift_without_flags(const Instruction& in) {
  if (!shift_without_flags(in) || flags_live_) return false;
  const uint16_t op = in.opcode;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  const uint8_t operation = in.group_index();
  // The count: CL (D2/D3), 1 (D0/D1) or the immediate, masked by the host as by the guest.
  const bool by_cl = op == 0xd2 || op == 0xd3;
  if (by_cl) load_register(rcx, kRcx, 1, false);
  const auto count = static_cast<uint8_t>(op >= 0xd0 ? 1 : in.immediate);
  const auto apply = [&](const Xbyak::Reg& target) {
    switch (operation) {
      case 0: by_cl ? code_.rol(target, cl) : code_.rol(target, count); break;
      case 1: by_cl ? code_.ror(target, cl) : code_.ror(target, count); break;
      case 5: by_cl ? code_.shr(target, cl) : code_.shr(target, count); break;
      case 7: by_cl ? code_.sar(target, cl) : code_.sar(target, count); break;
      default: by_cl ? code_.shl(target, cl) : code_.shl(target, count); break;
    }
  };
  const bool high_byte = size == 1 && !in.rex && in.rm >= 4 && in.rm < 8;
  if (caching_ && !high_byte) {
    // 8/16-bit host operations keep the rest of the register, 32-bit ones zero the upper
    // half, as the guest's do (a 32-bit count of zero zero-extends on both too).
    apply(sized(cached_register(in.rm, true), size));
    cached_[static_cast<size_t>(slot_of_[in.rm])].dirty = true;
  } else {
    load_register(rax, in.rm, size, in.rex);
    apply(sized(rax, size));
    store_register(in.rm, size, in.rex, rax);
  }
  known_flags_.reset();
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_rotate(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0xc0 && op != 0xc1 && op != 0xd0 && op != 0xd1) || in.memory || in.group_index() > 1) return false;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  const unsigned bits = size * 8u;
  const unsigned count = (op >= 0xd0 ? 1u : static_cast<uint8_t>(in.immediate)) & (bits == 64 ? 63u : 31u);
  if (count == 0) return false;  // no flags, no change: the handler's (rare) business
  const bool left = in.group_index() == 0;
  // r8 = the flags before it (from the known producer, else a C call: nothing is cached
  // outside register-only code).
  emit_flags_before_into_r8();
  load_register(rax, in.rm, size, in.rex);
  // The host rotate gives the guest's result for any count (both reduce it modulo the width).
  if (left) {
    code_.rol(sized(rax, size), static_cast<uint8_t>(count));
  } else {
    code_.ror(sized(rax, size), static_cast<uint8_t>(count));
  }
  store_register(in.rm, size, in.rex, rax);
  // ROL: CF the result's low bit, OF its top bit xor CF; ROR: CF the top bit, OF the top two
  // bits' xor.
  code_.mov(rcx, rax);
  code_.shr(rcx, bits - 1);
  code_.and_(ecx, 1);  // top bit
  if (left) {
    code_.mov(edx, eax);
    code_.and_(edx, 1);    // CF
    code_.xor_(ecx, edx);  // OF
    code_.shl(ecx, 11);
    code_.or_(ecx, edx);
  } else {
    code_.mov(rdx, rax);
    code_.shr(rdx, bits - 2);
    code_.and_(edx, 1);
    code_.xor_(edx, ecx);  // OF
    code_.shl(edx, 11);
    code_.or_(ecx, edx);   // CF = the top bit
  }
  code_.and_(r8, ~uint64_t{0x801} & 0xffffffffu);
  code_.or_(r8, rcx);
  store_r8_as_materialized_flags();
  pending_rip_ += in.length;
  return true;
}

void Translator::emit_carry_into_esi() {
  // CF as the lazy flags hold it (LazyFlags::cf), from this block's known producer.
  const std::optional<KnownFlags> known = known_flags_;
  if (known && known->op == FlagOp::kLogic) {
    code_.xor_(esi, esi);
    return;
  }
  if (known && (known->op == FlagOp::kInc || known->op == FlagOp::kDec)) {
    code_.movzx(esi, field(layout_.flags_carry, 1));
    return;
  }
  if (known && known->op == FlagOp::kMaterialized) {
    code_.movzx(esi, field(layout_.flags_materialized, 1));
    code_.and_(esi, 1);
    return;
  }
  if (known && (known->op == FlagOp::kAdd || known->op == FlagOp::kSub || known->op == FlagOp::kAdc ||
                known->op == FlagOp::kSbb)) {
    emit_host_flags_for(2);  // B: CF
    code_.setc(sil);
    code_.movzx(esi, sil);
    return;
  }
  // Maybe a C call: the cached registers it may clobber go back to CpuState first.
  forget_caller_saved_registers();
  emit_unknown_carry();
  code_.mov(esi, eax);
}

bool Translator::emit_carry_alu(const Instruction& in) {
  if (!carry_alu(in)) return false;
  const uint16_t op = in.opcode;
  int operation = 0;
  uint8_t size = in.operand_size;
  uint8_t destination = in.rm;
  bool rex = in.rex;
  emit_carry_into_esi();
  if (op < 0x40) {
    operation = op >> 3;
    if ((op & 1) == 0) size = 1;
    switch (op & 7) {
      case 0: case 1:  // r/m op= reg
        load_register(rax, in.rm, size, in.rex);
        load_register(rcx, in.reg, size, in.rex);
        break;
      case 2: case 3:  // reg op= r/m
        destination = in.reg;
        load_register(rax, in.reg, size, in.rex);
        load_register(rcx, in.rm, size, in.rex);
        break;
      default:  // AL/eAX op= imm
        destination = kRax;
        rex = false;
        load_register(rax, kRax, size, false);
        code_.mov(rcx, in.immediate & size_mask(size));
        break;
    }
  } else {
    operation = in.group_index();
    if (op == 0x80) size = 1;
    load_register(rax, in.rm, size, in.rex);
    code_.mov(rcx, in.immediate & size_mask(size));
  }
  // compute<2/3>: result a + b + carry / a - b - carry, flags kAdc/kSbb with the carry in.
  code_.mov(rdx, rax);
  code_.bt(esi, 0);
  if (operation == 2) {
    code_.adc(sized(rdx, size), sized(rcx, size));
  } else {
    code_.sbb(sized(rdx, size), sized(rcx, size));
  }
  if (size != 4) zero_extend(rdx, size);
  if (flags_live_) code_.mov(field(layout_.flags_carry, 1), sil);
  store_flags(operation == 2 ? FlagOp::kAdc : FlagOp::kSbb, size, true);
  store_register(destination, size, rex, rdx);
  note_host_flags(destination, size, rex);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_condition_forms(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  const bool set = op >= 0x190 && op <= 0x19f;
  const bool move = op >= 0x140 && op <= 0x14f;
  if ((!set && !move) || (in.memory && mode_ != CodeMode::k64)) return false;
  const auto condition = static_cast<uint8_t>(op & 15);
  const uint8_t size = in.operand_size;
  Xbyak::Label slow, done;
  if (in.memory && move) {
    // The source first, through the TLB (a miss or fault: the handler), into r12, which
    // nothing caches outside register-only code and the C call below keeps.
    emit_linear_address(in, slow);
    emit_tlb_lookup(AccessType::kRead, size, slow);
    switch (size) {
      case 2: code_.movzx(r12d, word[rdx]); break;
      case 4: code_.mov(r12d, dword[rdx]); break;
      default: code_.mov(r12, qword[rdx]); break;
    }
  }
  // ecx = 0/1 or the host flags for `condition`.
  const bool host = emit_host_flags_for(condition);
  if (!host) emit_unknown_condition(condition);
  // Only MOVs between here and the host SETcc/CMOVcc: the flags stay.
  if (set) {
    // A memory destination: the condition in r12b (kept by the lookup), then the byte written
    // through the TLB's write slot (setcc writes it whatever the condition).
    const Xbyak::Reg8 value = in.memory ? r12b : al;
    if (host) {
      set_if(code_, condition, value);
    } else {
      code_.setnz(value);
    }
    if (in.memory) {
      emit_linear_address(in, slow);
      emit_tlb_lookup(AccessType::kWrite, 1, slow);
      code_.mov(byte[rdx], r12b);
    } else {
      store_register(in.rm, 1, in.rex, rax);
    }
  } else {
    // conditional_move: the source is read either way; a 32-bit one zero-extends the
    // destination even when not taken, as the host CMOVcc does.
    if (in.memory) {
      code_.mov(rcx, r12);
    } else {
      load_register(rcx, in.rm, size, in.rex);
    }
    load_register(rax, in.reg, size, in.rex);
    move_if(code_, host ? condition : uint8_t{5}, sized(rax, size == 2 ? 4 : size), sized(rcx, size == 2 ? 4 : size));
    store_register(in.reg, size, in.rex, rax);
  }
  if (in.memory) join_slow_path(in, index, slow, done);
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
