// Inline SSE floating-point forms (64-bit mode): ADD, MUL, SUB, MIN, DIV, MAX, SQRT (and
// RSQRT/RCP of singles) in packed and scalar forms, CMPcc, COMISS/COMISD/UCOMISS/UCOMISD and
// CVTSI2SS/SD, by the host's own instruction on copies of the guest's registers. The SIMD unit
// computes them on the host too (simd/sse_host.h): under the guest's rounding control, DAZ and
// FTZ with every exception masked, then ORs the flags the host raised into the guest's MXCSR.
// When the guest's MXCSR masks every exception that is the whole of its semantics (commit_sse:
// nothing is unmasked, so nothing faults and no lane is inspected), and it is what this code
// does: the guest's MXCSR, flags cleared, loaded for the one instruction, the host's raised
// flags ORed into the guest's, the host's MXCSR restored. An unmasked exception in the guest's
// MXCSR, CR0/CR4 that forbid SSE, a misaligned packed operand or any TLB slow case: the handler.
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
  emit_simd_available_check(slow);
  // Every exception masked (MXCSR bits 7-12 set), else the SIMD unit decides.
  code_.mov(eax, field(layout_.mxcsr, 4));
  code_.not_(eax);
  code_.test(eax, kMxcsrMasks);
  code_.jnz(slow, CodeGenerator::T_NEAR);
  // The source: xmm1, or rax for CVTSI2SS/SD.
  if (in.memory) {
    emit_simd_memory(in, form, AccessType::kRead, size, slow);
    if (kind == FloatKind::kFromInteger) {
      code_.mov(sized(rax, size), size == 8 ? qword[rdx] : dword[rdx]);
    } else if (size == 4) {
      code_.movd(xmm1, ptr[rdx]);
    } else if (size == 8) {
      code_.movq(xmm1, ptr[rdx]);
    } else {
      code_.movdqu(xmm1, ptr[rdx]);
    }
  } else if (kind == FloatKind::kFromInteger) {
    code_.mov(sized(rax, size), field(layout_.gpr + 8 * (in.rm & 15), size));
  } else {
    code_.movdqu(xmm1, xmm_register(in.rm));
  }
  code_.movdqu(xmm0, xmm_register(in.reg));
  // The guest's MXCSR with its flags clear, in the red zone below the frame (no call until
  // the host's is back), the host's beside it.
  code_.mov(ecx, field(layout_.mxcsr, 4));
  code_.and_(ecx, 0xffff & ~kMxcsrFlags);
  code_.stmxcsr(dword[rsp - 8]);
  code_.mov(dword[rsp - 4], ecx);
  code_.ldmxcsr(dword[rsp - 4]);
  if (kind == FloatKind::kFromInteger) {
    // prefix, REX.W for a 64-bit source, 0F 2A, ModRM xmm0, rax.
    code_.db(prefix);
    if (wide) code_.db(0x48);
    code_.db(0x0f);
    code_.db(0x2a);
    code_.db(0xc0);
  } else {
    // CMPcc takes predicates 0-7 (imm8 bits 2:0), as the SIMD unit does.
    const std::optional<uint8_t> immediate =
        kind == FloatKind::kCompare ? std::optional<uint8_t>(static_cast<uint8_t>(in.immediate & 7))
                                    : std::nullopt;
    emit_host_simd(form, 0, 1, immediate);  // xmm0 op= xmm1
  }
  if (kind == FloatKind::kCompareToFlags) {
    // ZF, PF, CF from the comparison; OF, SF, AF clear (the host clears them too).
    code_.lahf();
    code_.movzx(eax, ah);  // (AH cannot be encoded with a REX prefix)
  }
  code_.stmxcsr(dword[rsp - 4]);
  code_.ldmxcsr(dword[rsp - 8]);
  code_.mov(ecx, dword[rsp - 4]);
  code_.and_(ecx, kMxcsrFlags);
  code_.or_(field(layout_.mxcsr, 4), ecx);
  if (kind == FloatKind::kCompareToFlags) {
    code_.and_(eax, 0x45);
    code_.mov(field(layout_.flags_materialized, 8), rax);
    code_.mov(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
  } else {
    code_.movdqu(xmm_register(in.reg), xmm0);
  }
  join_slow_path(in, index, slow, done);
  if (kind == FloatKind::kCompareToFlags) {
    // Both paths leave materialized flags (the SIMD unit writes them through write_rflags).
    known_flags_ = KnownFlags{FlagOp::kMaterialized, 8};
  } else {
    known_flags_ = flags;
  }
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
