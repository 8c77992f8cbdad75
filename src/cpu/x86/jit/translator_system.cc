// Inline system forms the mixed workload's profile found called often, in 64-bit mode: RDTSC
// (the privilege check inline, the time stamp from the MSR file through runtime.h, as
// system_handlers.cc reads it), CLI (IF cleared when CPL <= IOPL) and PUSHF with a 64-bit
// operand (RFLAGS with VM and RF clear, stack_handlers.cc's image, pushed through the TLB).
// A #GP they must raise, and every TLB slow case, runs the handler.
#include "cpu/x86/jit/translator.h"

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

}  // namespace

bool Translator::emit_system(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  if (mode_ != CodeMode::k64 ||
      (op != 0x131 && op != 0xfa && !(op == 0x9c && in.operand_size == 8)))
    return false;
  const std::optional<KnownFlags> flags = known_flags_;
  Xbyak::Label slow, done;
  if (op == 0x131) {
    // SDM vol. 2, RDTSC: #GP(0) with CR4.TSD outside CPL 0.
    Xbyak::Label allowed;
    code_.test(field(layout_.cr4, 1), static_cast<uint8_t>(cr4::kTsd));
    code_.jz(allowed);
    code_.cmp(field(layout_.cpl, 1), 0);
    code_.jne(slow, CodeGenerator::T_NEAR);
    code_.L(allowed);
    code_.mov(rdi, rbx);
    emit_runtime_call(reinterpret_cast<const void*>(&lamina_jit_read_time_stamp));
    // EDX:EAX, each a 32-bit write (zero-extended).
    code_.mov(ecx, eax);
    code_.mov(field(layout_.gpr + 8 * kRax, 8), rcx);
    code_.shr(rax, 32);
    code_.mov(field(layout_.gpr + 8 * kRdx, 8), rax);
  } else if (op == 0xfa) {
    // SDM vol. 2, CLI: #GP(0) when CPL > IOPL (64-bit mode is protected mode).
    code_.movzx(eax, field(layout_.cpl, 1));
    code_.mov(rcx, field(layout_.rflags, 8));
    code_.shr(ecx, 12);
    code_.and_(ecx, 3);
    code_.cmp(eax, ecx);
    code_.ja(slow, CodeGenerator::T_NEAR);
    code_.and_(field(layout_.rflags, 8), static_cast<uint32_t>(~rflags::kIf));
  } else {
    // r8 = RFLAGS as read_rflags gives it, less VM and RF (SDM vol. 2, PUSHF).
    emit_flags_before_into_r8();
    code_.mov(rax, field(layout_.rflags, 8));
    code_.and_(rax, static_cast<uint32_t>(~(rflags::kVm | rflags::kRf)));
    code_.or_(r8, rax);
    const int32_t rsp = layout_.gpr + 8 * kRsp;
    code_.mov(rax, field(rsp, 8));
    code_.sub(rax, 8);
    emit_canonical_check(rax, slow);
    emit_tlb_lookup(AccessType::kWrite, 8, slow);
    code_.mov(qword[rdx], r8);
    code_.mov(field(rsp, 8), rax);
  }
  join_slow_path(in, index, slow, done);
  known_flags_ = flags;  // none of them changes the arithmetic flags
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
