// Inline DIV and IDIV of 32- and 64-bit operands (registers, and memory in 64-bit mode), the
// host's own division, on the cases where it cannot raise: muldiv_handlers.cc raises #DE for a
// zero divisor or a quotient that does not fit, and the host would too (a host SIGFPE), so those
// run the handler, which raises it precisely. DIV fits when the high half of the dividend is
// below the divisor; IDIV takes the fast path only for a dividend that is its low half
// sign-extended (CDQ/CQO before it) and a divisor other than -1, where it always fits. The
// flags stay as they were, as the handler leaves them.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

}  // namespace

bool Translator::emit_divide(const Instruction& in, size_t index) {
  if (in.opcode != 0xf7 || in.group_index() < 6) return false;
  const uint8_t size = in.operand_size;
  if ((size != 4 && size != 8) || (in.memory && mode_ != CodeMode::k64)) return false;
  const bool is_signed = in.group_index() == 7;
  const std::optional<KnownFlags> flags = known_flags_;
  Xbyak::Label slow, done;
  const Xbyak::Reg divisor = sized(rcx, size);
  if (in.memory) {
    emit_linear_address(in, slow);
    emit_tlb_lookup(AccessType::kRead, size, slow);
    code_.mov(divisor, size == 4 ? dword[rdx] : qword[rdx]);
  } else {
    load_register(rcx, in.rm, size, in.rex);
  }
  code_.test(divisor, divisor);
  code_.jz(slow, CodeGenerator::T_NEAR);
  load_register(rax, kRax, size, false);
  load_register(rdx, kRdx, size, false);
  if (is_signed) {
    code_.mov(rsi, rax);
    code_.sar(sized(rsi, size), size * 8 - 1);
    code_.cmp(sized(rsi, size), sized(rdx, size));
    code_.jne(slow, CodeGenerator::T_NEAR);
    code_.cmp(divisor, -1);
    code_.je(slow, CodeGenerator::T_NEAR);
    code_.idiv(divisor);
  } else {
    code_.cmp(sized(rdx, size), divisor);
    code_.jae(slow, CodeGenerator::T_NEAR);
    code_.div(divisor);
  }
  // A 32-bit division zero-extends EAX and EDX, as write_register does.
  store_register(kRax, size, false, rax);
  store_register(kRdx, size, false, rdx);
  join_slow_path(in, index, slow, done);
  known_flags_ = flags;
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
