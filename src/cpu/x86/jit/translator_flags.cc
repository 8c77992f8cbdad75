// The lazy flags when the translator does not know their producer (the block's start, after a
// handler): a runtime check first, whether they are stored materialized (what shifts, rotates,
// multiplies, bit instructions, (U)COMIS and most handlers leave), read inline then, and only
// otherwise runtime.h's C call. Materialized flags reach the host flags through SAHF (SF, ZF,
// AF, PF, CF from byte 0) and an ADD of 0x7f to OF (bit 11), which overflows exactly when it is 1.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// Whether the Jcc condition pair (SDM vol. 1, appendix B) reads OF: O/NO, L/GE, LE/G.
bool reads_overflow(uint8_t condition) {
  const uint8_t pair = (condition & 15) >> 1;
  return pair == 0 || pair == 6 || pair == 7;
}

}  // namespace

void Translator::emit_sahf_flags(uint8_t condition) {
  if (reads_overflow(condition)) {
    code_.mov(ecx, eax);
    code_.shr(ecx, 11);
    code_.and_(ecx, 1);
    code_.add(cl, 0x7f);
  }
  code_.mov(ah, al);
  code_.sahf();
}

void Translator::emit_materialized_or(const Xbyak::Label& other) {
  code_.cmp(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
  code_.jne(other, CodeGenerator::T_NEAR);
  code_.mov(rax, field(layout_.flags_materialized, 8));
}

void Translator::emit_unknown_condition(uint8_t condition) {
  // Materialized flags through SAHF; ADD, SUB (CMP), INC, DEC and logic operations redone on
  // their operands at the top of 64-bit registers, which sets CF, ZF, SF and OF as the sized
  // operation did (a logic operation's TEST of its result: ZF and SF, CF = OF = 0 as stored).
  // A condition after a compare in the block before is the common case: `cmp; jb; ja` leaves
  // the second Jcc a block of its own. The C call is left for PF (P/NP), ADC/SBB, and CF of
  // INC/DEC (their kept carry).
  Xbyak::Label call, decided, stored, host;
  const uint8_t pair = (condition & 15) >> 1;
  const bool reads_parity = pair == 5;
  const bool reads_carry = pair == 1 || pair == 3;
  emit_materialized_or(stored);
  emit_sahf_flags(condition);
  code_.jmp(host, CodeGenerator::T_NEAR);
  code_.L(stored);
  if (reads_parity) {
    code_.jmp(call, CodeGenerator::T_NEAR);
  } else {
    emit_stored_operation_in_host_flags(call, !reads_carry, nullptr);
  }
  code_.L(host);
  code_.mov(eax, 0);
  set_condition(condition, al);
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(call);
  code_.mov(rdi, rbx);
  code_.mov(esi, condition);
  emit_runtime_call(reinterpret_cast<const void*>(&lamina_jit_condition));
  code_.L(decided);
  code_.test(eax, eax);
}

void Translator::emit_unknown_carry() {
  // LazyFlags::cf by the stored operation: bit 0 of materialized flags, clear after a logic
  // operation, the kept carry of INC/DEC, and for ADD/SUB the unsigned compare of the operands
  // moved to the top of 64-bit registers (the operation's size taken at run time); ADC/SBB
  // through the C call.
  Xbyak::Label materialized, logic, kept, add, call, decided;
  code_.movzx(eax, field(layout_.flags_op, 1));
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kMaterialized));
  code_.je(materialized, CodeGenerator::T_NEAR);
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kLogic));
  code_.je(logic, CodeGenerator::T_NEAR);
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kInc));
  code_.jae(kept, CodeGenerator::T_NEAR);  // kInc, kDec
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kAdd));
  code_.je(add, CodeGenerator::T_NEAR);
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kSub));
  code_.jne(call, CodeGenerator::T_NEAR);
  // SUB: first < second; cl = 64 - 8 * size.
  emit_operands_at_top(layout_.flags_first, layout_.flags_second);
  code_.cmp(rax, rdx);
  code_.setb(al);
  code_.movzx(eax, al);
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(add);
  // ADD: result < first.
  emit_operands_at_top(layout_.flags_result, layout_.flags_first);
  code_.cmp(rax, rdx);
  code_.setb(al);
  code_.movzx(eax, al);
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(kept);
  code_.movzx(eax, field(layout_.flags_carry, 1));
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(logic);
  code_.xor_(eax, eax);
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(materialized);
  code_.mov(rax, field(layout_.flags_materialized, 8));
  code_.and_(eax, 1);
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(call);
  code_.mov(rdi, rbx);
  emit_runtime_call(reinterpret_cast<const void*>(&lamina_jit_carry));
  code_.L(decided);
}

void Translator::emit_operand_shift_into_cl() {
  // cl = 64 - 8 * the stored operation's size: its operands moved to the top of a register.
  code_.movzx(ecx, field(layout_.flags_size, 1));
  code_.shl(ecx, 3);
  code_.neg(ecx);
  code_.add(ecx, 64);
}

void Translator::emit_operands_at_top(int32_t first, int32_t second) {
  // The sized operation's operands at the top of rax and rdx: a 64-bit compare or add of them
  // sets CF, ZF, SF and OF as the sized one did.
  emit_operand_shift_into_cl();
  code_.mov(rax, field(first, 8));
  code_.mov(rdx, field(second, 8));
  code_.shl(rax, cl);
  code_.shl(rdx, cl);
}

void Translator::emit_stored_operation_in_host_flags(const Xbyak::Label& other, bool steps,
                                                      const Xbyak::Label* logic_done) {
  Xbyak::Label add, sub, logic, done;
  code_.movzx(eax, field(layout_.flags_op, 1));
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kSub));
  code_.je(sub, CodeGenerator::T_NEAR);
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kAdd));
  code_.je(add, CodeGenerator::T_NEAR);
  code_.cmp(eax, static_cast<uint8_t>(FlagOp::kLogic));
  code_.je(logic, CodeGenerator::T_NEAR);
  if (steps) {
    // INC and DEC store 1 as their second operand (emit_step, alu_handlers.cc).
    code_.cmp(eax, static_cast<uint8_t>(FlagOp::kInc));
    code_.je(add, CodeGenerator::T_NEAR);
    code_.cmp(eax, static_cast<uint8_t>(FlagOp::kDec));
    code_.je(sub, CodeGenerator::T_NEAR);
  }
  code_.jmp(other, CodeGenerator::T_NEAR);
  code_.L(sub);
  emit_operands_at_top(layout_.flags_first, layout_.flags_second);
  code_.cmp(rax, rdx);
  code_.jmp(done, CodeGenerator::T_NEAR);
  code_.L(add);
  emit_operands_at_top(layout_.flags_first, layout_.flags_second);
  code_.add(rax, rdx);
  code_.jmp(done, CodeGenerator::T_NEAR);
  code_.L(logic);
  emit_operand_shift_into_cl();
  code_.mov(rax, field(layout_.flags_result, 8));
  code_.shl(rax, cl);
  code_.test(rax, rax);
  if (logic_done != nullptr) code_.jmp(*logic_done, CodeGenerator::T_NEAR);
  code_.L(done);
}

void Translator::emit_unknown_materialized_flags() {
  // LazyFlags::materialize for the common stored operations: ADD/SUB redone on the operands
  // at the top of 64-bit registers give CF, ZF, SF and OF of the sized operation; PF (the
  // result's low byte) and AF (bit 4 of first ^ second ^ result) apart. A logic operation
  // has ZF, SF and PF of its result and the rest clear. The others: the C call.
  constexpr uint32_t kCarryZeroSignOverflow = 0x8c1, kZeroSign = 0xc0, kAdjust = 0x10;
  Xbyak::Label materialized, logic, parity, call, decided;
  code_.cmp(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
  code_.je(materialized, CodeGenerator::T_NEAR);
  emit_stored_operation_in_host_flags(call, false, &logic);
  code_.pushfq();
  code_.pop(rdx);
  code_.and_(edx, kCarryZeroSignOverflow);
  code_.mov(rax, field(layout_.flags_first, 8));
  code_.xor_(rax, field(layout_.flags_second, 8));
  code_.xor_(rax, field(layout_.flags_result, 8));
  code_.and_(eax, kAdjust);
  code_.or_(edx, eax);
  code_.jmp(parity, CodeGenerator::T_NEAR);
  code_.L(logic);
  code_.pushfq();
  code_.pop(rdx);
  code_.and_(edx, kZeroSign);
  code_.L(parity);
  // PF: the result's low byte has an even number of ones.
  code_.mov(rax, field(layout_.flags_result, 8));
  code_.test(al, al);
  code_.setp(al);
  code_.movzx(eax, al);
  code_.shl(eax, 2);
  code_.or_(eax, edx);
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(materialized);
  code_.mov(rax, field(layout_.flags_materialized, 8));
  code_.jmp(decided, CodeGenerator::T_NEAR);
  code_.L(call);
  code_.mov(rdi, rbx);
  emit_runtime_call(reinterpret_cast<const void*>(&lamina_jit_materialized_flags));
  code_.L(decided);
}

}  // namespace lamina::cpu::x86::jit
