// More inline stack and segment-register forms in 64-bit mode with 64-bit operands, chosen by
// the mixed workload's profile: PUSH imm (68, 6A), PUSH r/m64 (FF /6), LEAVE (C9), and MOV r,
// Sreg (8C with a register destination). The stack accesses are CpuCore::push/pop's 64-bit
// case through the soft TLB (SS has base 0; a non-canonical address, a miss or any other slow
// case runs the handler, which faults exactly); nothing is written before the last check.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

}  // namespace

bool Translator::emit_stack_forms(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64) return false;
  const bool push_immediate = (op == 0x68 || op == 0x6a) && in.operand_size == 8;
  const bool push_operand = op == 0xff && in.group_index() == 6 && in.operand_size == 8;
  const bool leave = op == 0xc9 && in.operand_size == 8;
  const bool from_segment = op == 0x8c && !in.memory && in.group_index() <= 5;
  if (!push_immediate && !push_operand && !leave && !from_segment) return false;
  if (from_segment) {
    // move_from_segment: the selector zero-extended into 16 or 32 bits (a 32-bit write
    // clears the upper half).
    code_.movzx(eax,
                field(layout_.segment_selectors + layout_.segment_stride * in.group_index(), 2));
    store_register(in.rm, in.operand_size == 2 ? 2 : 4, false, rax);
    pending_rip_ += in.length;
    return true;
  }
  const int32_t rsp = layout_.gpr + 8 * kRsp;
  Xbyak::Label slow, done;
  if (leave) {
    // RSP = RBP, then RBP = the qword popped there.
    code_.mov(rax, field(layout_.gpr + 8 * kRbp, 8));
    emit_canonical_check(rax, slow);
    emit_tlb_lookup(AccessType::kRead, 8, slow);
    code_.mov(r8, qword[rdx]);
    code_.add(rax, 8);
    code_.mov(field(rsp, 8), rax);
    code_.mov(field(layout_.gpr + 8 * kRbp, 8), r8);
  } else {
    // r8 = the value: the immediate (sign-extended by the decoder), a register, or memory read
    // before the push (its fault comes first).
    if (push_immediate) {
      code_.mov(r8, in.immediate);
    } else if (!in.memory) {
      code_.mov(r8, field(layout_.gpr + 8 * in.rm, 8));
    } else {
      emit_linear_address(in, slow);
      emit_tlb_lookup(AccessType::kRead, 8, slow);
      code_.mov(r8, qword[rdx]);
    }
    code_.mov(rax, field(rsp, 8));
    code_.sub(rax, 8);
    emit_canonical_check(rax, slow);
    emit_tlb_lookup(AccessType::kWrite, 8, slow);
    code_.mov(qword[rdx], r8);
    code_.mov(field(rsp, 8), rax);
  }
  const std::optional<KnownFlags> flags = known_flags_;
  join_slow_path(in, index, slow, done);
  known_flags_ = flags;  // no flags change
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
