// Inline memory forms in 64-bit mode: MOV between a register or an immediate and memory,
// MOVZX/MOVSX/MOVSXD, ALU forms reading or writing memory, INC/DEC m, PUSH/POP of a register,
// CALL/RET and JMP/CALL r/m64. The fast path is CpuCore::read_linear/write_linear's: the
// operand within one page and the soft TLB entry of this privilege with a valid tag for this access;
// anything else (a miss, MMIO, a trapped write to a code page, a page crossing, a
// non-canonical address) runs the handler, which walks, faults or invalidates exactly as the
// interpreter does. All of them keep the cached guest registers: their slow paths lie after
// the block's end (translator_registers.cc says how the registers survive them). The stack
// accesses of a fused run (translator_stack_run.cc) skip their own lookups.
#include "cpu/x86/jit/translator.h"

#include <optional>

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

}  // namespace

void Translator::emit_linear_address(const Instruction& in, const Xbyak::Label& slow) {
  // CpuCore::effective_address, then linear_address's 64-bit case, whose canonical check the
  // TLB makes: it caches only canonical pages (tlb.h), so such an address misses and takes
  // `slow` at the lookup, where the handler raises the fault.
  static_cast<void>(slow);
  int64_t displacement = static_cast<int64_t>(in.displacement);
  std::optional<Xbyak::Reg64> base, index;
  if (in.base < 16) {
    if (caching_) {
      base = cached_register(in.base, true);
    } else {
      code_.mov(rax, field(layout_.gpr + 8 * in.base, 8));
      base = rax;
    }
  } else if (in.base == kRipRegister) {
    // RIP past this instruction: the bytes still pending go into the displacement.
    code_.mov(rax, field(layout_.rip, 8));
    displacement += static_cast<int64_t>(pending_rip_ + in.length);
    base = rax;
  }
  if (in.index < 16) {
    if (caching_) {
      index = cached_register(in.index, true);
    } else {
      code_.mov(rcx, field(layout_.gpr + 8 * in.index, 8));
      index = rcx;
    }
  }
  const bool any = base || index;
  const bool fits = displacement == static_cast<int32_t>(displacement);
  Xbyak::RegExp address(fits ? static_cast<int32_t>(displacement) : 0);
  if (base) address = address + *base;
  if (index) address = address + *index * (1 << in.scale);
  if (!any) {
    code_.mov(rax, static_cast<uint64_t>(displacement));
  } else if (fits && in.address_size != 8) {
    // A 32-bit LEA cuts the sum to the address size itself.
    code_.lea(eax, code_.ptr[address]);
  } else {
    code_.lea(rax, code_.ptr[address]);
    if (!fits) {
      code_.mov(rcx, static_cast<uint64_t>(displacement));
      code_.add(rax, rcx);
    }
  }
  if (in.address_size == 4 && (!any || !fits)) code_.mov(eax, eax);
  if (in.address_size == 2) code_.movzx(eax, ax);
  // ES, CS, SS and DS have base 0 in 64-bit mode (effective_base holds 0 for them).
  if (in.segment == kFs || in.segment == kGs) code_.add(rax, field(layout_.effective_base + 8 * in.segment, 8));
}

void Translator::emit_tlb_host_offset(AccessType type, uint32_t size, const Xbyak::Label& slow) {
  if (caching_) slow_path_mapping_ = current_mapping();
  // The entry: index (linear >> 12) & (kEntries - 1), 32 bytes each, so its byte offset is
  // bits 12.. of the address moved down to bit 5.
  static_assert(sizeof(TlbEntry) == 32);
  code_.mov(ecx, eax);
  code_.shr(ecx, 12 - 5);
  code_.and_(ecx, static_cast<uint32_t>((Tlb::kEntries - 1) << 5));
  // This privilege's table (Tlb::current_table, kept with the CPL): a load that depends on
  // nothing here, so it is done by the time the index is.
  code_.mov(rdx, field(layout_.tlb_table, 8));
  // The tag against the page of the operand's last byte: an entry holds only a page of its
  // own index, and only a canonical one (tlb.h), so a page crossing or a non-canonical
  // address misses here too. The tag is the page only when this access may go to RAM.
  if (size == 1) {
    code_.mov(rsi, rax);
  } else {
    code_.lea(rsi, ptr[rax + (size - 1)]);
  }
  code_.and_(rsi, 0xfffff000u);  // sign-extended: ~0xfff
  code_.cmp(rsi, qword[rdx + rcx + static_cast<int32_t>(offsetof(TlbEntry, tag) + 8 * static_cast<unsigned>(type))]);
  code_.jne(slow, CodeGenerator::T_NEAR);
  // host - linear for the whole page (a hit does not cross).
  code_.mov(rdx, qword[rdx + rcx + static_cast<int32_t>(offsetof(TlbEntry, addend))]);
}

void Translator::emit_tlb_lookup(AccessType type, uint8_t size, const Xbyak::Label& slow) {
  emit_tlb_host_offset(type, size, slow);
  code_.add(rdx, rax);
}

Translator::DeferredSlowPath& Translator::begin_deferred_slow_path() { return deferred_slow_paths_.emplace_back(); }

void Translator::emit_access_host_offset(AccessType type, uint8_t size, DeferredSlowPath& path) {
  if (!fused_stack_) {
    emit_tlb_host_offset(type, size, path.slow);
    return;
  }
  // The run's lookup covered this access (emit_stack_run); a later check of the form (CALL's
  // and RET's target) may still jump, with the registers as they are here.
  path.reachable = false;
  slow_path_mapping_ = current_mapping();
  ++fused_accesses_;
  if (!stack_offset_in_rdx_) code_.mov(rdx, qword[rsp + kStackRunOffsetSlot]);
  stack_offset_in_rdx_ = true;
}

void Translator::end_deferred_slow_path(const Instruction& in, size_t index, DeferredSlowPath& path) {
  path.in = &in;
  path.index = index;
  path.pending_rip = pending_rip_;
  path.at_jump = slow_path_mapping_;
  path.at_join = current_mapping();
  code_.L(path.done);
}

void Translator::emit_deferred_slow_paths() {
  for (DeferredSlowPath& path : deferred_slow_paths_) {
    if (!path.reachable) continue;
    code_.L(path.slow);
    // The handler and a fault see every register in CpuState.
    write_back_mapping(path.at_jump);
    // As emit_slow_path: the handler advances RIP past the instruction; back to where the
    // fast path has it, with this instruction's bytes pending.
    pending_rip_ = path.pending_rip;
    in_slow_path_ = true;
    emit_handler_call(*path.in, path.index);
    in_slow_path_ = false;
    if (!path.branch) code_.sub(field(layout_.rip, 8), static_cast<uint32_t>(path.pending_rip + path.in->length));
    reload_mapping_after_call(path.at_jump, path.at_join);
    if (path.host_flags) {
      // A Jcc after the instruction branches on the host flags its fast path left.
      const std::optional<KnownFlags> known = known_flags_;
      known_flags_ = path.host_flags;
      if (!emit_host_flags_for(static_cast<uint8_t>(Jump::kEqual))) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
      known_flags_ = known;
    }
    code_.jmp(path.done, CodeGenerator::T_NEAR);
  }
  pending_rip_ = 0;
}

void Translator::join_slow_path(const Instruction& in, size_t index, Xbyak::Label& slow,
                                Xbyak::Label& done) {
  code_.jmp(done, CodeGenerator::T_NEAR);
  code_.L(slow);
  emit_slow_path(in, index);
  code_.L(done);
}

void Translator::emit_slow_path(const Instruction& in, size_t index) {
  // The handler path advances RIP to past this instruction; the fast path leaves it pending.
  // Both continue with RIP where the fast path has it and this instruction's bytes pending.
  const uint64_t pending = pending_rip_;
  const std::optional<KnownFlags> flags = known_flags_;
  in_slow_path_ = true;
  emit_handler_call(in, index);
  in_slow_path_ = false;
  code_.sub(field(layout_.rip, 8), static_cast<uint32_t>(pending + in.length));
  pending_rip_ = pending;
  known_flags_ = flags;  // MOV, PUSH and POP leave the flags alone
}

namespace {

Xbyak::Address sized_memory(const Xbyak::RegExp& address, uint8_t size) {
  switch (size) {
    case 1: return byte[address];
    case 2: return word[address];
    case 4: return dword[address];
    default: return qword[address];
  }
}

}  // namespace

bool Translator::emit_memory_move(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || !in.memory) return false;
  const bool load = op == 0x8a || op == 0x8b;
  const bool store_register_form = op == 0x88 || op == 0x89;
  const bool store_immediate = (op == 0xc6 || op == 0xc7) && in.group_index() == 0;
  if (!load && !store_register_form && !store_immediate) return false;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  DeferredSlowPath& path = begin_deferred_slow_path();
  emit_linear_address(in, path.slow);
  emit_access_host_offset(load ? AccessType::kRead : AccessType::kWrite, size, path);
  const Xbyak::Address memory = sized_memory(rdx + rax, size);
  const bool direct = caching_ && !high_byte(in.reg, size, in.rex);
  if (load && direct) {
    // Straight into the cached register: 8/16-bit loads keep the rest of it, 32-bit ones zero
    // the upper half, as the guest's do.
    const Xbyak::Reg64 target = cached_register(in.reg, size <= 2);
    code_.mov(sized(target, size), memory);
    mark_written(in.reg);
  } else if (load) {
    if (size <= 2) {
      code_.movzx(ecx, memory);
    } else {
      code_.mov(sized(rcx, size), memory);
    }
    store_register(in.reg, size, in.rex, rcx);
  } else if (store_immediate) {
    // A 64-bit store takes the imm32 sign-extended, as the guest's does.
    code_.mov(memory, size == 8 ? in.immediate : in.immediate & ((uint64_t{1} << (size * 8)) - 1));
  } else if (direct) {
    code_.mov(memory, sized(cached_register(in.reg, true), size));
  } else {
    load_register(rcx, in.reg, size, in.rex);
    code_.mov(memory, sized(rcx, size));
  }
  end_deferred_slow_path(in, index, path);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_stack(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  // Only with the registers cached (emit_cached_memory).
  if (mode_ != CodeMode::k64 || op < 0x50 || op > 0x5f || in.operand_size != 8 || !caching_) return false;
  const uint8_t reg = static_cast<uint8_t>((op & 7) | (in.rm & 8));
  const bool push = op < 0x58;
  DeferredSlowPath& path = begin_deferred_slow_path();
  if (fused_stack_ && reg != kRsp) {
    // In a fused run (never PUSH/POP RSP): straight between the slot and the registers.
    const Xbyak::Reg64 stack = cached_register(kRsp, true);
    emit_access_host_offset(push ? AccessType::kWrite : AccessType::kRead, 8, path);
    if (push) {
      code_.mov(qword[rdx + stack - 8], cached_register(reg, true));
      code_.lea(stack, ptr[stack - 8]);
    } else {
      code_.mov(cached_register(reg, false), qword[rdx + stack]);
      mark_written(reg);
      code_.lea(stack, ptr[stack + 8]);
    }
    mark_written(kRsp);
    end_deferred_slow_path(in, index, path);
    pending_rip_ += in.length;
    return true;
  }
  // CpuCore::push/pop's 64-bit case: SS has base 0; a non-canonical address misses the TLB
  // (the handler raises #SS).
  code_.lea(rax, ptr[cached_register(kRsp, true) - (push ? 8 : 0)]);
  emit_access_host_offset(push ? AccessType::kWrite : AccessType::kRead, 8, path);
  if (push) {
    // PUSH RSP pushes the value before the decrement.
    code_.mov(qword[rdx + rax], cached_register(reg, true));
    store_register(kRsp, 8, true, rax);
  } else {
    code_.mov(rcx, qword[rdx + rax]);
    code_.add(rax, 8);
    store_register(kRsp, 8, true, rax);
    // POP RSP: the popped value wins over the increment.
    store_register(reg, 8, true, rcx);
  }
  end_deferred_slow_path(in, index, path);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_alu_memory(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || !in.memory) return false;
  // alu_handlers.cc: operation (0 ADD, 1 OR, 4 AND, 5 SUB, 6 XOR, 7 CMP, 8 TEST), whether the
  // memory operand is the first one, an immediate second operand.
  int operation = -1;
  bool memory_first = true;
  bool immediate = false;
  uint8_t size = in.operand_size;
  if (op < 0x40 && ((op & 7) == 2 || (op & 7) == 3)) {
    operation = op >> 3;  // reg op= r/m
    memory_first = false;
    if ((op & 1) == 0) size = 1;
  } else if (op == 0x38 || op == 0x39) {
    operation = 7;  // CMP r/m, reg
    if (op == 0x38) size = 1;
  } else if (op == 0x84 || op == 0x85) {
    operation = 8;
    if (op == 0x84) size = 1;
  } else if ((op == 0x80 || op == 0x81 || op == 0x83) && in.group_index() == 7) {
    operation = 7;
    immediate = true;
    if (op == 0x80) size = 1;
  } else if ((op == 0xf6 || op == 0xf7) && in.group_index() <= 1) {
    operation = 8;
    immediate = true;
    if (op == 0xf6) size = 1;
  } else {
    return false;
  }
  if (operation == 2 || operation == 3) return false;  // ADC, SBB read the carry
  const bool writes = operation != 7 && operation != 8;  // only the register of reg op= r/m
  DeferredSlowPath& path = begin_deferred_slow_path();
  emit_linear_address(in, path.slow);
  emit_tlb_host_offset(AccessType::kRead, size, path.slow);
  if (!flags_live_ && writes && caching_ && !high_byte(in.reg, size, in.rex)) {
    // reg op= m whose flags nothing sees: the host's operation on the cached register, as
    // emit_alu_on_host does (8/16-bit ones keep the rest of it, 32-bit ones zero it).
    const Xbyak::Reg target = sized(cached_register(in.reg, true), size);
    const Xbyak::Address source = sized_memory(rdx + rax, size);
    switch (operation) {
      case 0: code_.add(target, source); break;
      case 1: code_.or_(target, source); break;
      case 4: code_.and_(target, source); break;
      case 5: code_.sub(target, source); break;
      default: code_.xor_(target, source); break;
    }
    mark_written(in.reg);
    // Dead here means later register-only instructions overwrite every bit before any is read
    // (a memory form is no register_logic producer, whose CF a following INC/DEC could take).
    known_flags_.reset();
    end_deferred_slow_path(in, index, path);
    pending_rip_ += in.length;
    return true;
  }
  // rax: first operand, rcx: second.
  const Xbyak::Reg64& memory_value = memory_first ? rax : rcx;
  switch (size) {
    case 1: code_.movzx(memory_value.cvt32(), byte[rdx + rax]); break;
    case 2: code_.movzx(memory_value.cvt32(), word[rdx + rax]); break;
    case 4: code_.mov(memory_value.cvt32(), dword[rdx + rax]); break;
    default: code_.mov(memory_value, qword[rdx + rax]); break;
  }
  if (immediate) {
    code_.mov(rcx, size == 8 ? in.immediate : in.immediate & ((uint64_t{1} << (size * 8)) - 1));
  } else {
    load_register(memory_first ? rcx : rax, in.reg, size, in.rex);
  }
  emit_alu_operation(operation, size, writes, in.reg, in.rex);
  // Both paths leave the flags of this operation (the handler stores the same), the slow
  // one in the host flags too, set again from the stored ones (emit_deferred_slow_paths).
  note_host_flags(in.reg, size, in.rex);
  if (host_flags_producer_ == current_index_) path.host_flags = known_flags_;
  end_deferred_slow_path(in, index, path);
  pending_rip_ += in.length;
  return true;
}

namespace {

// data_handlers.cc move_extend: from the source size to the destination size in eax/rax,
// written as write_reg does.
template <typename Source>
void extend_into_rax(CodeGenerator& code, bool sign, uint8_t size, const Source& source) {
  if (sign && size == 8) {
    code.movsx(rax, source);
  } else if (sign) {
    code.movsx(eax, source);
    if (size == 2) code.movzx(eax, ax);
  } else {
    code.movzx(eax, source);
  }
}

}  // namespace

bool Translator::emit_extend_register(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op != 0x1b6 && op != 0x1b7 && op != 0x1be && op != 0x1bf) || in.memory) return false;
  const uint8_t source_size = (op & 1) ? 2 : 1;
  load_register(rax, in.rm, source_size, in.rex);
  extend_into_rax(code_, op >= 0x1be, in.operand_size, source_size == 1 ? Xbyak::Reg(al) : Xbyak::Reg(ax));
  store_register(in.reg, in.operand_size, in.rex, rax);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_extend(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  // MOVSXD (64-bit mode only: 63 is ARPL elsewhere): a dword sign-extended, or a plain MOV.
  const bool sign_extend_dword = op == 0x63;
  if (op != 0x1b6 && op != 0x1b7 && op != 0x1be && op != 0x1bf && !sign_extend_dword) return false;
  if (!in.memory || mode_ != CodeMode::k64) return false;
  const uint8_t source_size = sign_extend_dword ? (in.operand_size == 2 ? 2 : 4) : (op & 1) ? 2 : 1;
  DeferredSlowPath& path = begin_deferred_slow_path();
  emit_linear_address(in, path.slow);
  emit_tlb_host_offset(AccessType::kRead, source_size, path.slow);
  const Xbyak::Address source = sized_memory(rdx + rax, source_size);
  const bool sign = sign_extend_dword || op >= 0x1be;
  if (caching_ && in.operand_size >= 4) {
    // Straight into the cached register (a 32-bit destination zeroes the upper half).
    const Xbyak::Reg64 target = cached_register(in.reg, false);
    if (sign && in.operand_size == 8) {
      if (source_size == 4) {
        code_.movsxd(target, source);
      } else {
        code_.movsx(target, source);
      }
    } else if (source_size == 4) {
      code_.mov(target.cvt32(), source);
    } else if (sign) {
      code_.movsx(target.cvt32(), source);
    } else {
      code_.movzx(target.cvt32(), source);
    }
    mark_written(in.reg);
  } else {
    if (sign_extend_dword) {
      if (in.operand_size == 8) {
        code_.movsxd(rax, source);
      } else if (in.operand_size == 4) {
        code_.mov(eax, source);
      } else {
        code_.movzx(eax, source);
      }
    } else {
      extend_into_rax(code_, sign, in.operand_size, source);
    }
    store_register(in.reg, in.operand_size, in.rex, rax);
  }
  end_deferred_slow_path(in, index, path);
  pending_rip_ += in.length;
  return true;
}

void Translator::emit_canonical_check(const Xbyak::Reg64& reg, const Xbyak::Label& slow) {
  code_.mov(rcx, reg);
  code_.shl(rcx, 16);
  code_.sar(rcx, 16);
  code_.cmp(rcx, reg);
  code_.jne(slow, CodeGenerator::T_NEAR);
}

bool Translator::emit_call_return(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  // Only with the registers cached (emit_cached_memory).
  if (mode_ != CodeMode::k64 || in.operand_size != 8 || !caching_) return false;
  if (op != 0xe8 && !(op == 0xc3 && in.immediate == 0)) return false;
  DeferredSlowPath& path = begin_deferred_slow_path();
  path.branch = true;
  const Xbyak::Reg64 stack = cached_register(kRsp, true);
  // Every check before anything is written: the slow path's handler does it all again.
  if (op == 0xe8) {
    // control_flow.cc call_relative: the push of RIP past the instruction, RIP = the checked
    // target (rdi).
    code_.lea(rax, ptr[stack - 8]);
    emit_access_host_offset(AccessType::kWrite, 8, path);
    code_.mov(rcx, field(layout_.rip, 8));
    code_.add(rcx, static_cast<uint32_t>(pending_rip_ + in.length));
    code_.mov(rdi, in.immediate);
    code_.add(rdi, rcx);
    code_.mov(rsi, rcx);
    emit_canonical_check(rdi, path.slow);
    code_.mov(qword[rdx + rax], rsi);
  } else {
    // return_near's 64-bit case: read, check the target, then RSP and RIP.
    code_.mov(rax, stack);
    emit_access_host_offset(AccessType::kRead, 8, path);
    code_.mov(rdi, qword[rdx + rax]);
    emit_canonical_check(rdi, path.slow);
    code_.add(rax, 8);
  }
  path.reachable = true;
  store_register(kRsp, 8, true, rax);
  code_.mov(field(layout_.rip, 8), rdi);
  end_deferred_slow_path(in, index, path);
  pending_rip_ = 0;
  rip_flushed_ = true;
  return true;
}

}  // namespace lamina::cpu::x86::jit

namespace lamina::cpu::x86::jit {

bool Translator::emit_alu_memory_write(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || !in.memory) return false;
  // ADD/OR/AND/SUB/XOR m, reg/imm (alu_handlers.cc's modify_rm forms; not ADC/SBB, whose carry
  // the handler reads, nor CMP) and INC/DEC m. LOCK has sent them to the handler already.
  int operation = -1;
  bool immediate = false;
  bool step = false;
  uint8_t size = in.operand_size;
  if (op < 0x40 && (op & 7) < 2) {
    operation = op >> 3;
    if ((op & 1) == 0) size = 1;
  } else if (op == 0x80 || op == 0x81 || op == 0x83) {
    operation = in.group_index();
    immediate = true;
    if (op == 0x80) size = 1;
  } else if ((op == 0xfe || op == 0xff) && in.group_index() <= 1) {
    step = true;
    if (op == 0xfe) size = 1;
  } else {
    return false;
  }
  if (!step && (operation == 2 || operation == 3 || operation == 7)) return false;
  // INC/DEC keep CF: taken before the access (a C call may be made), kept in edi, which
  // neither the address nor the lookup touches; not needed when nothing sees the flags.
  if (step && flags_live_) {
    emit_carry_into_esi();
    code_.mov(edi, esi);
  }
  DeferredSlowPath& path = begin_deferred_slow_path();
  emit_linear_address(in, path.slow);
  emit_tlb_host_offset(AccessType::kWrite, size, path.slow);
  // rsi: the host address (the step and the operation use rax, rcx and rdx).
  code_.lea(rsi, ptr[rdx + rax]);
  switch (size) {
    case 1: code_.movzx(eax, byte[rsi]); break;
    case 2: code_.movzx(eax, word[rsi]); break;
    case 4: code_.mov(eax, dword[rsi]); break;
    default: code_.mov(rax, qword[rsi]); break;
  }
  if (step) {
    const bool increment = in.group_index() == 0;
    emit_step(size, increment);
    if (flags_live_) code_.mov(field(layout_.flags_carry, 1), dil);
    store_flags(increment ? FlagOp::kInc : FlagOp::kDec, size, true);
  } else {
    if (immediate) {
      code_.mov(rcx, size == 8 ? in.immediate : in.immediate & ((uint64_t{1} << (size * 8)) - 1));
    } else {
      load_register(rcx, in.reg, size, in.rex);
    }
    emit_alu_operation(operation, size, false, in.reg, in.rex);
  }
  switch (size) {
    case 1: code_.mov(byte[rsi], dl); break;
    case 2: code_.mov(word[rsi], dx); break;
    case 4: code_.mov(dword[rsi], edx); break;
    default: code_.mov(qword[rsi], rdx); break;
  }
  // Both paths leave the flags of this operation (the handler stores the same).
  end_deferred_slow_path(in, index, path);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_indirect_branch(const Instruction& in, size_t index) {
  // JMP and CALL r/m64 in 64-bit mode (control_flow.cc jump_indirect, call_indirect): the
  // target read and checked, CALL's push, then RIP; any slow case runs the handler, which
  // does all of it again exactly. Only with the registers cached (emit_cached_memory).
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || op != 0xff || in.operand_size != 8 || !caching_) return false;
  const bool call = in.group_index() == 2;
  if (!call && in.group_index() != 4) return false;
  DeferredSlowPath& path = begin_deferred_slow_path();
  path.branch = true;
  // RSP first, so that every jump to the slow path leaves with one mapping.
  const std::optional<Xbyak::Reg64> stack = call ? std::optional(cached_register(kRsp, true)) : std::nullopt;
  // rdi = the target (the lookups clobber rcx and rsi).
  if (in.memory) {
    emit_linear_address(in, path.slow);
    emit_tlb_host_offset(AccessType::kRead, 8, path.slow);
    code_.mov(rdi, qword[rdx + rax]);
  } else {
    code_.mov(rdi, cached_register(in.rm, true));
    slow_path_mapping_ = current_mapping();
  }
  emit_canonical_check(rdi, path.slow);
  if (stack) {
    code_.lea(rax, ptr[*stack - 8]);
    emit_tlb_host_offset(AccessType::kWrite, 8, path.slow);
    // The return address: RIP past this instruction.
    code_.mov(rcx, field(layout_.rip, 8));
    code_.add(rcx, static_cast<uint32_t>(pending_rip_ + in.length));
    code_.mov(qword[rdx + rax], rcx);
    store_register(kRsp, 8, true, rax);
  }
  code_.mov(field(layout_.rip, 8), rdi);
  end_deferred_slow_path(in, index, path);
  pending_rip_ = 0;
  rip_flushed_ = true;
  known_flags_.reset();
  return true;
}

}  // namespace lamina::cpu::x86::jit
