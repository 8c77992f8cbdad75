// Inline memory forms in 64-bit mode: MOV between a register or an immediate and memory, and
// PUSH/POP of a register. The fast path is CpuCore::read_linear/write_linear's: the operand
// within one page and the soft TLB's host pointer for this access and privilege; anything else
// (a miss, MMIO, a trapped write to a code page, a page crossing, a non-canonical address) runs
// the handler, which walks, faults or invalidates exactly as the interpreter does.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

}  // namespace

void Translator::emit_linear_address(const Instruction& in, const Xbyak::Label& slow) {
  // CpuCore::effective_address, then linear_address's 64-bit case.
  code_.mov(rax, static_cast<uint64_t>(in.displacement));
  if (in.base < 16) {
    code_.add(rax, field(layout_.gpr + 8 * in.base, 8));
  } else if (in.base == kRipRegister) {
    code_.add(rax, field(layout_.rip, 8));
    code_.add(rax, static_cast<uint32_t>(pending_rip_ + in.length));
  }
  if (in.index < 16) {
    code_.mov(rcx, field(layout_.gpr + 8 * in.index, 8));
    if (in.scale != 0) code_.shl(rcx, in.scale);
    code_.add(rax, rcx);
  }
  if (in.address_size == 4) code_.mov(eax, eax);
  if (in.address_size == 2) code_.movzx(eax, ax);
  // ES, CS, SS and DS have base 0 in 64-bit mode (effective_base holds 0 for them).
  if (in.segment == kFs || in.segment == kGs) code_.add(rax, field(layout_.effective_base + 8 * in.segment, 8));
  code_.mov(rcx, rax);
  code_.shl(rcx, 16);
  code_.sar(rcx, 16);
  code_.cmp(rcx, rax);
  code_.jne(slow, CodeGenerator::T_NEAR);
}

void Translator::emit_tlb_lookup(AccessType type, uint8_t size, const Xbyak::Label& slow) {
  // Within one page: (linear & 0xfff) <= 4096 - size.
  code_.mov(esi, eax);
  code_.and_(esi, 0xfff);
  code_.cmp(esi, 4096 - size);
  code_.ja(slow, CodeGenerator::T_NEAR);
  // The entry: index (linear >> 12) & (kEntries - 1), 64 bytes each; its tag is the page.
  code_.mov(rcx, rax);
  code_.shr(rcx, 12);
  code_.and_(ecx, static_cast<uint32_t>(Tlb::kEntries - 1));
  code_.shl(ecx, 6);
  code_.lea(rcx, ptr[rbx + rcx + layout_.tlb_entries]);
  code_.mov(rdx, rax);
  code_.and_(rdx, 0xfffff000u);  // sign-extended: ~0xfff
  code_.cmp(rdx, qword[rcx + offsetof(TlbEntry, tag)]);
  code_.jne(slow, CodeGenerator::T_NEAR);
  // host[slot(type, user)]: user is CPL 3, the slot three pointers on.
  code_.xor_(edx, edx);
  code_.cmp(field(layout_.cpl, 1), 3);
  code_.sete(dl);
  code_.imul(edx, edx, 3 * 8);
  code_.mov(rdx, qword[rcx + rdx + offsetof(TlbEntry, host) + 8 * static_cast<unsigned>(type)]);
  code_.test(rdx, rdx);
  code_.jz(slow, CodeGenerator::T_NEAR);
  code_.add(rdx, rsi);
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

bool Translator::emit_memory_move(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || !in.memory) return false;
  const bool load = op == 0x8a || op == 0x8b;
  const bool store_register_form = op == 0x88 || op == 0x89;
  const bool store_immediate = (op == 0xc6 || op == 0xc7) && in.group_index() == 0;
  if (!load && !store_register_form && !store_immediate) return false;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  Xbyak::Label slow, done;
  emit_linear_address(in, slow);
  emit_tlb_lookup(load ? AccessType::kRead : AccessType::kWrite, size, slow);
  if (load) {
    if (size <= 2) {
      code_.movzx(eax, size == 1 ? static_cast<const Xbyak::Address&>(byte[rdx]) : word[rdx]);
    } else {
      code_.mov(sized(rax, size), size == 4 ? dword[rdx] : qword[rdx]);
    }
    store_register(in.reg, size, in.rex, rax);
  } else {
    if (store_immediate) {
      code_.mov(rcx, size == 8 ? in.immediate : in.immediate & ((uint64_t{1} << (size * 8)) - 1));
    } else {
      load_register(rcx, in.reg, size, in.rex);
    }
    switch (size) {
      case 1: code_.mov(byte[rdx], cl); break;
      case 2: code_.mov(word[rdx], cx); break;
      case 4: code_.mov(dword[rdx], ecx); break;
      default: code_.mov(qword[rdx], rcx); break;
    }
  }
  join_slow_path(in, index, slow, done);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_stack(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || op < 0x50 || op > 0x5f || in.operand_size != 8) return false;
  const uint8_t reg = static_cast<uint8_t>((op & 7) | (in.rm & 8));
  const bool push = op < 0x58;
  const int32_t rsp = layout_.gpr + 8 * kRsp;
  Xbyak::Label slow, done;
  // CpuCore::push/pop's 64-bit case: SS has base 0, the address must be canonical.
  code_.mov(rax, field(rsp, 8));
  if (push) code_.sub(rax, 8);
  code_.mov(rcx, rax);
  code_.shl(rcx, 16);
  code_.sar(rcx, 16);
  code_.cmp(rcx, rax);
  code_.jne(slow, CodeGenerator::T_NEAR);
  emit_tlb_lookup(push ? AccessType::kWrite : AccessType::kRead, 8, slow);
  if (push) {
    code_.mov(rcx, field(layout_.gpr + 8 * reg, 8));
    code_.mov(qword[rdx], rcx);
    code_.mov(field(rsp, 8), rax);
  } else {
    code_.mov(rcx, qword[rdx]);
    code_.add(field(rsp, 8), 8);
    // POP RSP: the popped value wins over the increment.
    code_.mov(field(layout_.gpr + 8 * reg, 8), rcx);
  }
  join_slow_path(in, index, slow, done);
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
  Xbyak::Label slow, done;
  emit_linear_address(in, slow);
  emit_tlb_lookup(AccessType::kRead, size, slow);
  // rax: first operand, rcx: second.
  const Xbyak::Reg64& memory_value = memory_first ? rax : rcx;
  switch (size) {
    case 1: code_.movzx(memory_value.cvt32(), byte[rdx]); break;
    case 2: code_.movzx(memory_value.cvt32(), word[rdx]); break;
    case 4: code_.mov(memory_value.cvt32(), dword[rdx]); break;
    default: code_.mov(memory_value, qword[rdx]); break;
  }
  if (immediate) {
    code_.mov(rcx, size == 8 ? in.immediate : in.immediate & ((uint64_t{1} << (size * 8)) - 1));
  } else {
    load_register(memory_first ? rcx : rax, in.reg, size, in.rex);
  }
  emit_alu_operation(operation, size, writes, in.reg, in.rex);
  const std::optional<KnownFlags> flags = known_flags_;
  join_slow_path(in, index, slow, done);
  // Both paths leave the flags of this operation (the handler stores the same).
  known_flags_ = flags;
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
  Xbyak::Label slow, done;
  emit_linear_address(in, slow);
  emit_tlb_lookup(AccessType::kRead, source_size, slow);
  if (sign_extend_dword) {
    if (in.operand_size == 8) {
      code_.movsxd(rax, dword[rdx]);
    } else if (in.operand_size == 4) {
      code_.mov(eax, dword[rdx]);
    } else {
      code_.movzx(eax, word[rdx]);
    }
  } else if (source_size == 1) {
    extend_into_rax(code_, op >= 0x1be, in.operand_size, byte[rdx]);
  } else {
    extend_into_rax(code_, op >= 0x1be, in.operand_size, word[rdx]);
  }
  store_register(in.reg, in.operand_size, in.rex, rax);
  join_slow_path(in, index, slow, done);
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
  if (mode_ != CodeMode::k64 || in.operand_size != 8) return false;
  if (op != 0xe8 && !(op == 0xc3 && in.immediate == 0)) return false;
  const int32_t rsp = layout_.gpr + 8 * kRsp;
  // RIP past the instruction: CALL's return address.
  pending_rip_ += in.length;
  flush_rip();
  Xbyak::Label slow, done;
  if (op == 0xe8) {
    // control_flow.cc call_relative: the checked target, then the push, then RIP.
    code_.mov(r8, field(layout_.rip, 8));
    code_.mov(rcx, in.immediate);
    code_.add(r8, rcx);
    emit_canonical_check(r8, slow);
    code_.mov(rax, field(rsp, 8));
    code_.sub(rax, 8);
    emit_canonical_check(rax, slow);
    emit_tlb_lookup(AccessType::kWrite, 8, slow);
    code_.mov(rcx, field(layout_.rip, 8));
    code_.mov(qword[rdx], rcx);
    code_.mov(field(rsp, 8), rax);
    code_.mov(field(layout_.rip, 8), r8);
  } else {
    // return_near's 64-bit case: read, check the target, then RSP and RIP.
    code_.mov(rax, field(rsp, 8));
    emit_canonical_check(rax, slow);
    emit_tlb_lookup(AccessType::kRead, 8, slow);
    code_.mov(r8, qword[rdx]);
    emit_canonical_check(r8, slow);
    code_.add(field(rsp, 8), 8);
    code_.mov(field(layout_.rip, 8), r8);
  }
  code_.jmp(done, CodeGenerator::T_NEAR);
  code_.L(slow);
  emit_handler_call_after_advance(in, index);
  code_.L(done);
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
  // INC/DEC keep CF: taken before the access (a C call may be made), kept in r8.
  if (step) {
    emit_carry_into_esi();
    code_.mov(r8d, esi);
  }
  Xbyak::Label slow, done;
  emit_linear_address(in, slow);
  emit_tlb_lookup(AccessType::kWrite, size, slow);
  code_.mov(rdi, rdx);
  switch (size) {
    case 1: code_.movzx(eax, byte[rdi]); break;
    case 2: code_.movzx(eax, word[rdi]); break;
    case 4: code_.mov(eax, dword[rdi]); break;
    default: code_.mov(rax, qword[rdi]); break;
  }
  if (step) {
    const bool increment = in.group_index() == 0;
    emit_step(size, increment);
    code_.mov(field(layout_.flags_carry, 1), r8b);
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
    case 1: code_.mov(byte[rdi], dl); break;
    case 2: code_.mov(word[rdi], dx); break;
    case 4: code_.mov(dword[rdi], edx); break;
    default: code_.mov(qword[rdi], rdx); break;
  }
  const std::optional<KnownFlags> flags = known_flags_;
  join_slow_path(in, index, slow, done);
  // Both paths leave the flags of this operation (the handler stores the same).
  known_flags_ = flags;
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_indirect_branch(const Instruction& in, size_t index) {
  // JMP and CALL r/m64 in 64-bit mode (control_flow.cc jump_indirect, call_indirect): the
  // target read and checked, CALL's push, then RIP; any slow case runs the handler, which
  // does all of it again exactly.
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 || op != 0xff || in.operand_size != 8) return false;
  const bool call = in.group_index() == 2;
  if (!call && in.group_index() != 4) return false;
  const int32_t rsp = layout_.gpr + 8 * kRsp;
  const uint64_t pending = pending_rip_;
  Xbyak::Label slow, done;
  if (in.memory) {
    emit_linear_address(in, slow);
    emit_tlb_lookup(AccessType::kRead, 8, slow);
    code_.mov(r8, qword[rdx]);
  } else {
    code_.mov(r8, field(layout_.gpr + 8 * in.rm, 8));
  }
  emit_canonical_check(r8, slow);
  if (call) {
    code_.mov(rax, field(rsp, 8));
    code_.sub(rax, 8);
    emit_canonical_check(rax, slow);
    emit_tlb_lookup(AccessType::kWrite, 8, slow);
    // The return address: RIP past this instruction.
    code_.mov(rcx, field(layout_.rip, 8));
    code_.add(rcx, static_cast<uint32_t>(pending + in.length));
    code_.mov(qword[rdx], rcx);
    code_.mov(field(rsp, 8), rax);
  }
  code_.mov(field(layout_.rip, 8), r8);
  code_.jmp(done, Xbyak::CodeGenerator::T_NEAR);
  code_.L(slow);
  emit_handler_call(in, index);
  code_.L(done);
  rip_flushed_ = true;
  pending_rip_ = 0;
  known_flags_.reset();
  return true;
}

}  // namespace lamina::cpu::x86::jit
