// Inline SSE floating-point forms (64-bit mode): ADD, MUL, SUB, MIN, DIV, MAX, SQRT (and
// RSQRT/RCP of singles) in packed and scalar forms, CMPcc, COMISS/COMISD/UCOMISS/UCOMISD and
// CVTSI2SS/SD, by the host's own instruction on the host XMM registers that cache the guest's
// (translator_xmm.cc; a memory source through xmm1). The SIMD unit computes them on the host
// too (simd/sse_host.h): under the guest's rounding control, DAZ and FTZ with every exception
// masked, then ORs the flags the host raised into the guest's MXCSR. When the guest's MXCSR
// masks every exception that is the whole of its semantics (commit_sse: nothing is unmasked,
// so nothing faults and no lane is inspected), and it is what this code does, with the
// guest's control bits (flags clear) in the host's MXCSR from the first float form on until
// C++ runs next (the handler stub, emit_runtime_call, the chaining stub's call switch back,
// ORing the raised flags into the guest's): over inlined code and chained blocks alike. An
// unmasked exception in the guest's MXCSR, CR0/CR4 that forbid SSE, a misaligned packed
// operand or any TLB slow case: the handler.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

constexpr uint32_t kMxcsrMasks = 0x1f80, kMxcsrFlags = 0x3f;

enum class FloatKind : uint8_t { kNone, kArithmetic, kCompare, kCompareToFlags, kFromInteger };

FloatKind float_kind(const Instruction& in) {
  if ((in.opcode & 0xff00) != kMap0F) return FloatKind::kNone;
  const uint8_t opcode = in.opcode_byte();
  const uint8_t prefix = in.mandatory_prefix;
  // SDM vol. 2 appendix A, table A-3: 0F 51-5F (less the logic and conversion rows), 0F C2.
  const bool arithmetic =
      opcode == 0x51 || opcode == 0x58 || opcode == 0x59 || (opcode >= 0x5c && opcode <= 0x5f);
  if (arithmetic) return FloatKind::kArithmetic;
  if ((opcode == 0x52 || opcode == 0x53) && (prefix == 0 || prefix == 0xf3))
    return FloatKind::kArithmetic;
  if (opcode == 0xc2) return FloatKind::kCompare;
  if ((opcode == 0x2e || opcode == 0x2f) && (prefix == 0 || prefix == 0x66))
    return FloatKind::kCompareToFlags;
  if (opcode == 0x2a && (prefix == 0xf2 || prefix == 0xf3)) return FloatKind::kFromInteger;
  return FloatKind::kNone;
}

}  // namespace

bool Translator::sse_float(const Instruction& in) { return float_kind(in) != FloatKind::kNone; }

void Translator::emit_mxcsr_switch_out(int32_t frame, const Xbyak::Reg32& scratch) {
  // Nothing to do while the host's MXCSR is in place (the guest slot reads 0).
  Xbyak::Label host;
  code_.cmp(dword[rsp + frame + kGuestMxcsrSlot], 0);
  code_.je(host);
  // What the host raised since the guest's control bits went in (their flags were clear) is
  // ORed into the guest's MXCSR; then the host's comes back. The red zone holds the value for
  // the two instructions between (no call, no push).
  code_.stmxcsr(dword[rsp - 4]);
  code_.ldmxcsr(dword[rsp + frame + kHostMxcsrSlot]);
  code_.mov(scratch, dword[rsp - 4]);
  code_.and_(scratch, kMxcsrFlags);
  code_.or_(field(layout_.mxcsr, 4), scratch);
  code_.mov(dword[rsp + frame + kGuestMxcsrSlot], 0);
  code_.L(host);
}

void Translator::emit_mxcsr_switch_in(const Xbyak::Label& slow) {
  // Once in, the guest's control bits stay until the next C call or return to the run loop
  // (emit_mxcsr_switch_out): a chained successor finds them in place too.
  Xbyak::Label guest;
  code_.cmp(dword[rsp + kGuestMxcsrSlot], 0);
  code_.jne(guest, CodeGenerator::T_NEAR);
  // Every exception masked (MXCSR bits 7-12 set), else the SIMD unit decides. Only a handler
  // changes the guest's MXCSR, and every handler runs with the host's, so whenever the guest's
  // is in place this held when it went in.
  code_.mov(ecx, field(layout_.mxcsr, 4));
  code_.mov(eax, ecx);
  code_.not_(eax);
  code_.test(eax, kMxcsrMasks);
  code_.jnz(slow, CodeGenerator::T_NEAR);
  code_.and_(ecx, 0xffff & ~kMxcsrFlags);  // flags clear: what the host raises is new
  code_.stmxcsr(dword[rsp + kHostMxcsrSlot]);
  code_.mov(dword[rsp + kGuestMxcsrSlot], ecx);  // never 0: the masks are set
  code_.ldmxcsr(dword[rsp + kGuestMxcsrSlot]);
  code_.L(guest);
}

bool Translator::emit_sse_float(const Instruction& in, size_t index) {
  if (mode_ != CodeMode::k64) return false;
  const FloatKind kind = float_kind(in);
  if (kind == FloatKind::kNone) return false;
  const uint8_t prefix = in.mandatory_prefix;
  const bool scalar = prefix == 0xf2 || prefix == 0xf3 || kind == FloatKind::kCompareToFlags;
  const bool doubles = prefix == 0xf2 || prefix == 0x66;
  const bool wide = in.rex_w;  // CVTSI2SS/SD: a 64-bit integer source
  uint8_t size = 16;
  if (kind == FloatKind::kFromInteger) {
    size = wide ? 8 : 4;
  } else if (scalar) {
    size = doubles ? 8 : 4;
  }
  const SimdForm form{.kind = SimdKind::kBinary,
                      .prefix = prefix,
                      .opcode = in.opcode_byte(),
                      .size = size,
                      .aligned = !scalar && kind != FloatKind::kFromInteger,
                      .immediate = kind == FloatKind::kCompare};
  const std::optional<KnownFlags> flags = known_flags_;
  Xbyak::Label slow, done;
  // The XMM cache's slots (translator_xmm.cc) before the first jump to `slow`, the source
  // before the destination (they may be one guest register); a memory source goes to xmm1.
  const bool from_integer = kind == FloatKind::kFromInteger;
  const Xbyak::Xmm source = (in.memory || from_integer) ? xmm1 : simd_slot(in.rm, true);
  const Xbyak::Xmm destination = simd_slot(in.reg, true);
  emit_simd_available_check(slow);
  emit_mxcsr_switch_in(slow);
  // The source: xmm1 (or the cached register), or rax for CVTSI2SS/SD.
  if (in.memory) {
    emit_simd_memory(in, form, AccessType::kRead, size, slow);
    if (from_integer) {
      code_.mov(sized(rax, size), size == 8 ? qword[rdx] : dword[rdx]);
    } else if (size == 4) {
      code_.movd(xmm1, ptr[rdx]);
    } else if (size == 8) {
      code_.movq(xmm1, ptr[rdx]);
    } else {
      code_.movdqu(xmm1, ptr[rdx]);
    }
  } else if (from_integer) {
    code_.mov(sized(rax, size), field(layout_.gpr + 8 * (in.rm & 15), size));
  }
  const auto reg = static_cast<uint8_t>(destination.getIdx());
  if (from_integer) {
    // prefix, REX (W for a 64-bit source, R for xmm8-15), 0F 2A, ModRM destination, rax.
    code_.db(prefix);
    if (wide || reg >= 8) code_.db(0x40 | (wide ? 8 : 0) | ((reg & 8) >> 1));
    code_.db(0x0f);
    code_.db(0x2a);
    code_.db(0xc0 | ((reg & 7) << 3));
  } else {
    // CMPcc takes predicates 0-7 (imm8 bits 2:0), as the SIMD unit does.
    const std::optional<uint8_t> immediate =
        kind == FloatKind::kCompare ? std::optional<uint8_t>(static_cast<uint8_t>(in.immediate & 7))
                                    : std::nullopt;
    emit_host_simd(form, reg, static_cast<uint8_t>(source.getIdx()), immediate);
  }
  // A Jcc right after (U)COMIS branches on the host flags it left (host_flags_producer_).
  std::optional<uint8_t> branch_condition;
  if (kind == FloatKind::kCompareToFlags) {
    // ZF, PF, CF from the comparison; OF, SF, AF clear (the host clears them too). None of
    // these instructions changes the host flags: LAHF leaves bit 1 (always 1) in AH, and the
    // LEA takes it away.
    code_.lahf();
    code_.movzx(eax, ah);  // (AH cannot be encoded with a REX prefix)
    code_.lea(eax, ptr[rax - 2]);
    code_.mov(field(layout_.flags_materialized, 8), rax);
    code_.mov(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
    const auto& instructions = block_->instructions;
    if (index + 1 < instructions.size()) {
      const uint16_t op = instructions[index + 1].opcode;
      if ((op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f)) branch_condition = static_cast<uint8_t>(op & 15);
    }
  }
  code_.jmp(done, CodeGenerator::T_NEAR);
  code_.L(slow);
  emit_slow_path(in, index);
  if (branch_condition) {
    // The Jcc reads the host flags: the handler's materialized ones, as the fast path left them.
    code_.mov(rax, field(layout_.flags_materialized, 8));
    emit_sahf_flags(*branch_condition);
  }
  code_.L(done);
  if (kind == FloatKind::kCompareToFlags) {
    // Both paths leave materialized flags (the SIMD unit writes them through write_rflags).
    known_flags_ = KnownFlags{FlagOp::kMaterialized, 8};
    if (branch_condition) host_flags_producer_ = index;
  } else {
    known_flags_ = flags;
    mark_xmm_written(in.reg);
  }
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
