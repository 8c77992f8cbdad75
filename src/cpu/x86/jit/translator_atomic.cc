// Inline XCHG r/m, r, CMPXCHG and XADD with a memory operand in 64-bit mode, LOCK or not, as
// the host's locked instruction on the soft TLB's write pointer: what data_handlers.cc's
// exchange and atomic_handlers.cc do with std::atomic_ref on an aligned host pointer (a locked
// operation is a correct unlocked one too). A misaligned operand, a TLB miss, MMIO or a trapped
// write runs the handler, which takes its own non-atomic path or faults. The flags are the
// handlers': CMPXCHG those of CMP accumulator, old; XADD those of ADD old, source.
#include "cpu/x86/jit/translator.h"

#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

Xbyak::Address sized_memory(CodeGenerator& code, const Xbyak::Reg64& base, uint8_t size) {
  switch (size) {
    case 1: return code.byte[base];
    case 2: return code.word[base];
    case 4: return code.dword[base];
    default: return code.qword[base];
  }
}

}  // namespace

bool Translator::emit_atomic(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  const bool exchange = op == 0x86 || op == 0x87;
  const bool compare_exchange = op == 0x1b0 || op == 0x1b1;
  const bool exchange_add = op == 0x1c0 || op == 0x1c1;
  if (!exchange && !compare_exchange && !exchange_add) return false;
  // LOCK with a register operand is #UD: the handler's business.
  if (!in.memory || mode_ != CodeMode::k64 || in.handler == &invalid_opcode) return false;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  Xbyak::Label slow, done;
  emit_linear_address(in, slow);
  if (size > 1) {
    code_.test(al, size - 1);
    code_.jnz(slow, CodeGenerator::T_NEAR);
  }
  emit_tlb_lookup(AccessType::kWrite, size, slow);
  code_.mov(rdi, rdx);
  const Xbyak::Address memory = sized_memory(code_, rdi, size);
  if (exchange) {
    load_register(rcx, in.reg, size, in.rex);
    code_.xchg(memory, sized(rcx, size));  // locked by definition
    store_register(in.reg, size, in.rex, rcx);
    // The flags stay as they were on both paths.
    join_slow_path(in, index, slow, done);
    pending_rip_ += in.length;
    return true;
  }
  if (compare_exchange) {
    load_register(rax, kRax, size, false);
    code_.mov(r8, rax);
    load_register(rcx, in.reg, size, in.rex);
    code_.lock();
    code_.cmpxchg(memory, sized(rcx, size));
    // The accumulator now holds the old value either way; written only when they differed
    // (a 32-bit write zero-extends RAX; an equal one leaves RAX alone).
    Xbyak::Label equal;
    code_.jz(equal);
    store_register(kRax, size, false, rax);
    code_.L(equal);
    // CMP accumulator, old.
    code_.mov(rcx, rax);
    code_.mov(rax, r8);
    code_.mov(rdx, r8);
    code_.sub(rdx, rcx);
    zero_extend(rdx, size);
    store_flags(FlagOp::kSub, size, false);
  } else {
    load_register(rcx, in.reg, size, in.rex);
    code_.mov(r8, rcx);
    code_.lock();
    code_.xadd(memory, sized(rcx, size));
    // SRC <- old after the memory write; ADD old, source.
    store_register(in.reg, size, in.rex, rcx);
    code_.mov(rax, rcx);
    code_.mov(rcx, r8);
    code_.lea(rdx, ptr[rax + rcx]);
    zero_extend(rdx, size);
    store_flags(FlagOp::kAdd, size, false);
  }
  const std::optional<KnownFlags> flags = known_flags_;
  join_slow_path(in, index, slow, done);
  known_flags_ = flags;
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
