// Inline bit scans, bit tests and the one-operand MUL of registers (forms the profile of the
// mixed bench found called millions of times: BSF/BSR behind strlen-like loops, BT, MUL r64),
// and in 64-bit mode BSF/BSR from memory and BT* of memory by an immediate through the TLB,
// with the flags as bit_handlers.cc and muldiv_handlers.cc store them: BSF/BSR replace ZF and
// BT* replace CF in the materialized flags (the rest as they were: from the block's known
// producer, else a C call), MUL sets
// them as set_logic_flags does. When nothing of this block can see the flags before they are
// overwritten, none are stored.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

constexpr uint32_t kCarry = 0x1, kZero = 0x40, kAdjust = 0x10, kOverflow = 0x800;
constexpr uint32_t kArithmetic = 0x8d5;  // CF PF AF ZF SF OF

}  // namespace

void Translator::emit_flags_before_into_r8() {
  // LazyFlags::materialize from this block's known producer: stored materialized, or its
  // operation redone on the host, whose six flags are the lazy ones but for AF of a logic
  // operation (taken as clear) and CF of INC/DEC (kept in carry_in). Clobbers rax, rcx, rdx.
  if (known_flags_ && known_flags_->op == FlagOp::kMaterialized) {
    code_.mov(r8, field(layout_.flags_materialized, 8));
    return;
  }
  const std::optional<FlagOp> known = known_flags_ ? std::optional<FlagOp>(known_flags_->op) : std::nullopt;
  if (known && emit_host_flags_for(4)) {  // Z: a condition INC/DEC's host flags can give
    code_.pushfq();
    code_.pop(r8);
    if (*known == FlagOp::kLogic) {
      code_.and_(r8d, kArithmetic & ~(kCarry | kAdjust | kOverflow));
    } else if (*known == FlagOp::kInc || *known == FlagOp::kDec) {
      code_.and_(r8d, kArithmetic & ~kCarry);
      code_.movzx(eax, field(layout_.flags_carry, 1));
      code_.or_(r8d, eax);
    } else {
      code_.and_(r8d, kArithmetic);
    }
    return;
  }
  // Maybe a C call: nothing is cached in host registers outside register-only code.
  emit_unknown_materialized_flags();
  code_.mov(r8, rax);
}

void Translator::store_r8_as_materialized_flags() {
  code_.mov(field(layout_.flags_materialized, 8), r8);
  code_.mov(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
  known_flags_ = KnownFlags{FlagOp::kMaterialized, 8};
}

void Translator::load_bit_operand(const Xbyak::Reg64& to, const Instruction& in, uint8_t size, AccessType type,
                                  const Xbyak::Label& slow) {
  if (!in.memory) {
    load_register(to, in.rm, size, in.rex);
    return;
  }
  // r8 (the flags before) survives the lookup; rdi keeps the host address for a write back.
  emit_linear_address(in, slow);
  emit_tlb_lookup(type, size, slow);
  code_.mov(rdi, rdx);
  switch (size) {
    case 2: code_.movzx(to.cvt32(), word[rdi]); break;
    case 4: code_.mov(to.cvt32(), dword[rdi]); break;
    default: code_.mov(to, qword[rdi]); break;
  }
}

bool Translator::emit_bit_scan(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  // BSF/BSR r, r/m (F3 0F BC/BD too: TZCNT/LZCNT are not advertised and run as BSF/BSR).
  if ((op != 0x1bc && op != 0x1bd) || in.operand_size == 1) return false;
  if (in.memory && mode_ != CodeMode::k64) return false;
  const uint8_t size = in.operand_size;
  const bool observed = flags_needed(index);
  if (observed) emit_flags_before_into_r8();
  Xbyak::Label zero, done, slow, after;
  load_bit_operand(rcx, in, size, AccessType::kRead, slow);
  if (op == 0x1bc) {
    code_.bsf(sized(rax, size), sized(rcx, size));
  } else {
    code_.bsr(sized(rax, size), sized(rcx, size));
  }
  // A zero source leaves the destination alone (bit_scan) and sets ZF.
  code_.jz(zero, CodeGenerator::T_NEAR);
  store_register(in.reg, size, in.rex, rax);
  if (observed) code_.and_(r8, ~uint64_t{kZero} & 0xffffffffu);
  code_.jmp(done, CodeGenerator::T_NEAR);
  code_.L(zero);
  if (observed) code_.or_(r8, kZero);
  code_.L(done);
  known_flags_.reset();
  if (observed) store_r8_as_materialized_flags();
  // The handler stores the same materialized flags.
  if (in.memory) join_slow_path(in, index, slow, after);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_bit_test(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  // BT/BTS/BTR/BTC r, r (0F A3, AB, B3, BB) and r/m, imm8 (0F BA /4-/7; memory in 64-bit
  // mode: an immediate offset stays within the operand, a register one may not).
  int operation = -1;
  if (op == 0x1a3) operation = 4;
  if (op == 0x1ab) operation = 5;
  if (op == 0x1b3) operation = 6;
  if (op == 0x1bb) operation = 7;
  const bool immediate = op == 0x1ba;
  if (immediate) operation = in.group_index() >= 4 ? in.group_index() : -1;
  if (operation < 0 || in.operand_size == 1) return false;
  if (in.memory && (!immediate || mode_ != CodeMode::k64)) return false;
  const uint8_t size = in.operand_size;
  const bool observed = flags_needed(index);
  if (observed) emit_flags_before_into_r8();
  Xbyak::Label slow, after;
  load_bit_operand(rax, in, size, operation == 4 ? AccessType::kRead : AccessType::kWrite, slow);
  // The host's register forms take the offset modulo the operand width, as bit_test does.
  if (immediate) {
    const auto bit = static_cast<uint8_t>(in.immediate & (size * 8u - 1));
    switch (operation) {
      case 4: code_.bt(sized(rax, size), bit); break;
      case 5: code_.bts(sized(rax, size), bit); break;
      case 6: code_.btr(sized(rax, size), bit); break;
      default: code_.btc(sized(rax, size), bit); break;
    }
  } else {
    load_register(rcx, in.reg, size, in.rex);
    switch (operation) {
      case 4: code_.bt(sized(rax, size), sized(rcx, size)); break;
      case 5: code_.bts(sized(rax, size), sized(rcx, size)); break;
      case 6: code_.btr(sized(rax, size), sized(rcx, size)); break;
      default: code_.btc(sized(rax, size), sized(rcx, size)); break;
    }
  }
  code_.setc(dl);
  if (operation != 4) {
    if (in.memory) {
      code_.mov(size == 2 ? word[rdi] : size == 4 ? dword[rdi] : qword[rdi], sized(rax, size));
    } else {
      store_register(in.rm, size, in.rex, rax);
    }
  }
  if (observed) {
    code_.movzx(edx, dl);
    code_.and_(r8, ~uint64_t{kCarry} & 0xffffffffu);
    code_.or_(r8, rdx);
    store_r8_as_materialized_flags();
  } else {
    known_flags_.reset();
  }
  if (in.memory) join_slow_path(in, index, slow, after);
  pending_rip_ += in.length;
  return true;
}

bool Translator::emit_multiply_accumulator(const Instruction& in, size_t index) {
  // MUL r32/r64 (F7 /4): RDX:RAX = RAX * r/m.
  if (in.opcode != 0xf7 || in.group_index() != 4 || in.memory) return false;
  const uint8_t size = in.operand_size;
  if (size != 4 && size != 8) return false;
  load_register(rcx, in.rm, size, in.rex);
  load_register(rax, kRax, size, false);
  code_.mul(sized(rcx, size));
  // CF = OF = a nonzero high half; SF, ZF, PF from the low half (set_logic_flags).
  code_.setc(cl);
  store_register(kRax, size, false, rax);
  store_register(kRdx, size, false, rdx);
  if (flags_needed(index)) {
    code_.movzx(ecx, cl);
    code_.mov(esi, ecx);
    code_.shl(esi, 11);
    code_.or_(ecx, esi);
    code_.test(sized(rax, size), sized(rax, size));
    store_materialized_flags();
  } else {
    known_flags_.reset();
  }
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
