// Inline SSE integer forms (64-bit mode): the moves, logic, compares, PMOVMSKB, the other
// SSE2 integer operations and the SSSE3 ones (PSHUFB, PALIGNR...) that libc's string functions
// (memcpy, strlen, memchr...) run on, done by the same host instruction on the host XMM
// registers that cache the guest's (translator_xmm.cc; xmm1 holds a memory operand). Only forms whose host result is the guest's by definition (integer or bitwise,
// no MXCSR, no exception but the ones checked here) are taken. The fast path checks CR0.EM,
// CR0.TS and CR4.OSFXSR (once per run of inlined code: only a handler changes them), the
// 16-byte alignment of an aligned form's memory operand and the soft TLB's fast path; anything
// else (#UD, #NM, #GP, a miss, MMIO, a page crossing) runs the SIMD unit through the handler,
// which raises exactly what the interpreter raises.
#include "cpu/x86/jit/translator.h"

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// SSE2 integer operations of 66 0F xx whose operands are xmm, xmm/m128 (SDM Vol. 2 appendix
// A, table A-3): unpacks, packs, compares, add/subtract, multiplies, min/max, averages, logic,
// shifts by an xmm count, PSADBW, PMADDWD. No MXCSR, no exception past the checks here.
bool integer_binary(uint8_t opcode) {
  return (opcode >= 0x60 && opcode <= 0x6d) || (opcode >= 0x74 && opcode <= 0x76) ||
         (opcode >= 0xd1 && opcode <= 0xd5) || (opcode >= 0xd8 && opcode <= 0xdf) ||
         (opcode >= 0xe0 && opcode <= 0xe5) || (opcode >= 0xe8 && opcode <= 0xef) ||
         (opcode >= 0xf1 && opcode <= 0xf6) || (opcode >= 0xf8 && opcode <= 0xfe);
}

// SSSE3 operations of 66 0F 38 xx on xmm, xmm/m128 (SDM Vol. 2 appendix A, table A-4):
// PSHUFB, PHADD*/PHSUB*, PMADDUBSW, PSIGN*, PMULHRSW, PABS*; the SIMD unit runs them whatever
// CPUID says, so the host's (which has SSSE3) is the same answer.
bool ssse3_binary(uint8_t opcode) { return opcode <= 0x0b || (opcode >= 0x1c && opcode <= 0x1e); }

bool host_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}

}  // namespace

SimdForm Translator::simd_form(const Instruction& in) {
  if (in.lock) return {};
  // The three-byte maps' SSSE3 forms: 66 0F 38 00-0B/1C-1E and PALIGNR (66 0F 3A 0F ib), as
  // legacy-SSE 16-byte operations their memory operand aligned.
  if ((in.opcode & 0xff00) == kMap0F38 && in.mandatory_prefix == 0x66 && ssse3_binary(in.opcode_byte())) {
    return {.kind = SimdKind::kBinary, .prefix = 0x66, .opcode = in.opcode_byte(), .escape = 0x38,
            .size = 16, .aligned = true};
  }
  // PCMPISTRM/PCMPISTRI (66 0F 3A 62/63 ib): defined bit for bit by the SDM (vol. 2, 4.1), so
  // the host's (x86-64-v2 has SSE4.2) is sse42_strings.cc's answer; no alignment (vol. 1,
  // 12.10.3). A reserved imm8 bit 7 stays with the unit.
  if ((in.opcode & 0xff00) == kMap0F3A && in.mandatory_prefix == 0x66 &&
      (in.opcode_byte() == 0x62 || in.opcode_byte() == 0x63) && !(in.immediate & 0x80) && host_has_sse42()) {
    return {.kind = SimdKind::kStringCompare, .prefix = 0x66, .opcode = in.opcode_byte(), .escape = 0x3a,
            .size = 16, .immediate = true};
  }
  if ((in.opcode & 0xff00) == kMap0F3A && in.mandatory_prefix == 0x66 && in.opcode_byte() == 0x0f) {
    return {.kind = SimdKind::kBinary, .prefix = 0x66, .opcode = 0x0f, .escape = 0x3a, .size = 16,
            .aligned = true, .immediate = true};
  }
  if ((in.opcode & 0xff00) != kMap0F) return {};
  const uint8_t opcode = in.opcode_byte();
  const uint8_t prefix = in.mandatory_prefix;
  const bool memory = in.memory;
  SimdForm form;
  form.prefix = prefix;
  form.opcode = opcode;
  // MOVUPS/MOVUPD, MOVAPS/MOVAPD, MOVDQA/MOVDQU loads and stores.
  const bool moves_16 = opcode == 0x10 || opcode == 0x11 || opcode == 0x28 || opcode == 0x29;
  if (moves_16 && (prefix == 0 || prefix == 0x66)) {
    form.kind = (opcode & 1) ? SimdKind::kStore : SimdKind::kLoad;
    form.size = 16;
    form.aligned = opcode >= 0x28;
    return form;
  }
  // MOVSS/MOVSD (F3/F2 0F 10/11): moves of the low lane, no MXCSR, no alignment.
  if ((opcode == 0x10 || opcode == 0x11) && (prefix == 0xf3 || prefix == 0xf2)) {
    form.kind = SimdKind::kScalarMove;
    form.size = prefix == 0xf3 ? 4 : 8;
    return form;
  }
  if ((opcode == 0x6f || opcode == 0x7f) && (prefix == 0x66 || prefix == 0xf3)) {
    form.kind = opcode == 0x7f ? SimdKind::kStore : SimdKind::kLoad;
    form.size = 16;
    form.aligned = prefix == 0x66;
    return form;
  }
  // MOVNTDQ, MOVNTPS/MOVNTPD: memory only, aligned (the host is TSO; no fence needed).
  if (((opcode == 0xe7 && prefix == 0x66) || (opcode == 0x2b && (prefix == 0 || prefix == 0x66))) && memory) {
    form.kind = SimdKind::kStore;
    form.size = 16;
    form.aligned = true;
    return form;
  }
  // MOVQ xmm, xmm/m64 (F3 0F 7E) and MOVQ xmm/m64, xmm (66 0F D6): the upper half cleared.
  if (opcode == 0x7e && prefix == 0xf3) {
    form.kind = SimdKind::kLoad;
    form.size = 8;
    return form;
  }
  if (opcode == 0xd6 && prefix == 0x66) {
    form.kind = SimdKind::kStore;
    form.size = 8;
    return form;
  }
  // MOVD/MOVQ xmm, r/m32|64 and r/m32|64, xmm.
  if ((opcode == 0x6e || opcode == 0x7e) && prefix == 0x66) {
    form.kind = opcode == 0x6e ? SimdKind::kMoveFromGeneral : SimdKind::kMoveToGeneral;
    form.size = in.rex_w ? 8 : 4;
    return form;
  }
  if (opcode == 0xd7 && prefix == 0x66 && !memory) {
    form.kind = SimdKind::kMoveMask;
    return form;
  }
  // ANDPS/ANDNPS/ORPS/XORPS and their PD forms: bitwise, never an SIMD FP exception.
  if (opcode >= 0x54 && opcode <= 0x57 && (prefix == 0 || prefix == 0x66)) {
    form.kind = SimdKind::kBinary;
    form.size = 16;
    form.aligned = true;
    return form;
  }
  if (prefix == 0x66 && integer_binary(opcode)) {
    form.kind = SimdKind::kBinary;
    form.size = 16;
    form.aligned = true;
    return form;
  }
  // PSHUFD/PSHUFHW/PSHUFLW xmm, xmm/m128, imm8.
  if (opcode == 0x70 && (prefix == 0x66 || prefix == 0xf2 || prefix == 0xf3)) {
    form.kind = SimdKind::kBinary;
    form.size = 16;
    form.aligned = true;
    form.immediate = true;
    return form;
  }
  // Shifts of an xmm register by an immediate: 66 0F 71/72 /2 /4 /6, 66 0F 73 /2 /3 /6 /7.
  if (opcode >= 0x71 && opcode <= 0x73 && prefix == 0x66 && !memory) {
    const uint8_t group = (in.modrm >> 3) & 7;
    const bool valid = opcode == 0x73 ? (group == 2 || group == 3 || group == 6 || group == 7)
                                      : (group == 2 || group == 4 || group == 6);
    if (!valid) return {};
    form.kind = SimdKind::kShiftImmediate;
    return form;
  }
  return {};
}

Xbyak::Address Translator::xmm_register(uint8_t index) const {
  return code_.xword[rbx + layout_.xmm + 16 * (index & 15)];
}

void Translator::emit_simd_available_check(const Xbyak::Label& slow) {
  if (simd_checked_) return;
  // SDM vol. 3A 2.5, vol. 1 13.1: #UD with CR0.EM or without CR4.OSFXSR, #NM with CR0.TS.
  code_.test(field(layout_.cr0, 1), static_cast<uint8_t>(cr0::kEm | cr0::kTs));
  code_.jnz(slow, CodeGenerator::T_NEAR);
  code_.test(field(layout_.cr4 + 1, 1), static_cast<uint8_t>(cr4::kOsfxsr >> 8));
  code_.jz(slow, CodeGenerator::T_NEAR);
  simd_checked_ = true;
}

void Translator::emit_simd_memory(const Instruction& in, const SimdForm& form, AccessType type,
                                  uint8_t size, const Xbyak::Label& slow) {
  emit_linear_address(in, slow);
  // A legacy-SSE 16-byte operand of an aligned form: #GP(0) when misaligned (SDM vol. 1
  // 11.4.1), before the access.
  if (form.aligned && size == 16) {
    code_.test(al, 15);
    code_.jnz(slow, CodeGenerator::T_NEAR);
  }
  emit_tlb_lookup(type, size, slow);
}

void Translator::emit_host_simd(const SimdForm& form, uint8_t reg, uint8_t rm, std::optional<uint8_t> immediate) {
  // prefix, REX (xmm8-15: R for the ModRM reg field, B for rm), 0F, escape, opcode, a
  // register ModRM, the immediate (SDM vol. 2A 2.2.1: REX comes after the mandatory prefix).
  if (form.prefix != 0) code_.db(form.prefix);
  if (((reg | rm) & 8) != 0) code_.db(0x40 | ((reg & 8) >> 1) | ((rm & 8) >> 3));
  code_.db(0x0f);
  if (form.escape != 0) code_.db(form.escape);
  code_.db(form.opcode);
  code_.db(0xc0 | ((reg & 7) << 3) | (rm & 7));
  if (immediate) code_.db(*immediate);
}

bool Translator::emit_simd(const Instruction& in, size_t index) {
  if (mode_ != CodeMode::k64) return false;
  const SimdForm form = simd_form(in);
  if (form.kind == SimdKind::kNone) return false;
  Xbyak::Label slow, done;
  const bool checked_before = simd_checked_;
  // Every case takes its XMM slots (translator_xmm.cc) before its first jump to `slow`, the
  // sources before the destination (which may be the same guest register), then checks that
  // SSE may run.
  // The guest register the fast path wrote: marked dirty only after the slow path is
  // emitted, whose handler call must not store the host register (the handler writes it, or
  // raises with the old value in CpuState).
  std::optional<uint8_t> written;
  const auto immediate = [&]() -> std::optional<uint8_t> {
    return form.immediate ? std::optional<uint8_t>(static_cast<uint8_t>(in.immediate)) : std::nullopt;
  };
  switch (form.kind) {
    case SimdKind::kLoad: {
      // (xmm1: nothing, the operand is memory)
      const Xbyak::Xmm source = in.memory ? xmm1 : simd_slot(in.rm, true);
      const Xbyak::Xmm destination = simd_slot(in.reg, false);
      emit_simd_available_check(slow);
      if (in.memory) {
        emit_simd_memory(in, form, AccessType::kRead, form.size, slow);
        if (form.size == 16) {
          code_.movdqu(destination, ptr[rdx]);
        } else {
          code_.movq(destination, ptr[rdx]);  // the upper half cleared
        }
      } else if (form.size == 16) {
        if (destination.getIdx() != source.getIdx()) code_.movdqa(destination, source);
      } else {
        code_.movq(destination, source);  // F3 0F 7E: the upper half cleared
      }
      written = in.reg;
      break;
    }
    case SimdKind::kStore: {
      const Xbyak::Xmm source = simd_slot(in.reg, true);
      if (in.memory) {
        emit_simd_available_check(slow);
        emit_simd_memory(in, form, AccessType::kWrite, form.size, slow);
        if (form.size == 16) {
          code_.movdqu(ptr[rdx], source);
        } else {
          code_.movq(ptr[rdx], source);
        }
        break;
      }
      const Xbyak::Xmm destination = simd_slot(in.rm, false);
      emit_simd_available_check(slow);
      if (form.size == 16) {
        if (destination.getIdx() != source.getIdx()) code_.movdqa(destination, source);
      } else {
        code_.movq(destination, source);  // 66 0F D6 to a register clears the upper half
      }
      written = in.rm;
      break;
    }
    case SimdKind::kMoveFromGeneral: {
      const Xbyak::Xmm destination = simd_slot(in.reg, false);
      emit_simd_available_check(slow);
      if (in.memory) {
        emit_simd_memory(in, form, AccessType::kRead, form.size, slow);
        if (form.size == 8) {
          code_.mov(rcx, qword[rdx]);
        } else {
          code_.mov(ecx, dword[rdx]);
        }
      } else if (form.size == 8) {
        code_.mov(rcx, field(layout_.gpr + 8 * (in.rm & 15), 8));
      } else {
        code_.mov(ecx, field(layout_.gpr + 8 * (in.rm & 15), 4));
      }
      code_.movq(destination, rcx);  // the rest of the register cleared
      written = in.reg;
      break;
    }
    case SimdKind::kMoveToGeneral: {
      const Xbyak::Xmm source = simd_slot(in.reg, true);
      emit_simd_available_check(slow);
      if (in.memory) {
        emit_simd_memory(in, form, AccessType::kWrite, form.size, slow);
        if (form.size == 8) {
          code_.movq(ptr[rdx], source);
        } else {
          code_.movd(ptr[rdx], source);
        }
      } else {
        // A 32-bit write zero-extends into the 64-bit register.
        if (form.size == 8) {
          code_.movq(rax, source);
        } else {
          code_.movd(eax, source);
        }
        code_.mov(field(layout_.gpr + 8 * (in.rm & 15), 8), rax);
      }
      break;
    }
    case SimdKind::kMoveMask: {
      const Xbyak::Xmm source = simd_slot(in.rm, true);
      emit_simd_available_check(slow);
      code_.pmovmskb(eax, source);
      code_.mov(field(layout_.gpr + 8 * (in.reg & 15), 8), rax);
      break;
    }
    case SimdKind::kBinary:
    case SimdKind::kStringCompare: {
      // A memory operand is loaded into xmm1.
      const Xbyak::Xmm source = in.memory ? xmm1 : simd_slot(in.rm, true);
      const Xbyak::Xmm destination = simd_slot(in.reg, true);
      // PCMPISTRM's mask goes to XMM0 whatever the operands (the host's to xmm0 too).
      const bool mask = form.kind == SimdKind::kStringCompare && form.opcode == 0x62;
      const Xbyak::Xmm mask_register = mask ? simd_slot(0, false) : xmm0;
      emit_simd_available_check(slow);
      if (in.memory) {
        emit_simd_memory(in, form, AccessType::kRead, 16, slow);
        code_.movdqu(xmm1, ptr[rdx]);
      }
      emit_host_simd(form, static_cast<uint8_t>(destination.getIdx()), static_cast<uint8_t>(source.getIdx()),
                     immediate());
      if (form.kind == SimdKind::kBinary) {
        written = in.reg;
        break;
      }
      // CF, ZF, SF, OF as the host set them, AF and PF clear (it clears them too).
      code_.pushfq();
      code_.pop(rax);
      code_.and_(eax, 0x8d5);
      code_.mov(field(layout_.flags_materialized, 8), rax);
      code_.mov(field(layout_.flags_op, 1), static_cast<uint8_t>(FlagOp::kMaterialized));
      if (mask) {
        code_.movdqa(mask_register, xmm0);
        written = 0;
      } else {
        code_.mov(field(layout_.gpr + 8 * kRcx, 8), rcx);  // the index, a 32-bit write
      }
      known_flags_ = KnownFlags{FlagOp::kMaterialized, 8};
      break;
    }
    case SimdKind::kShiftImmediate: {
      const Xbyak::Xmm operand = simd_slot(in.rm, true);
      emit_simd_available_check(slow);
      emit_host_simd(form, static_cast<uint8_t>((in.modrm >> 3) & 7), static_cast<uint8_t>(operand.getIdx()),
                     static_cast<uint8_t>(in.immediate));
      written = in.rm;
      break;
    }
    case SimdKind::kScalarMove: {
      const bool load = form.opcode == 0x10;
      if (in.memory && load) {
        // SDM vol. 2, MOVSS/MOVSD: a load from memory clears the rest of the register.
        const Xbyak::Xmm destination = simd_slot(in.reg, false);
        emit_simd_available_check(slow);
        emit_simd_memory(in, form, AccessType::kRead, form.size, slow);
        if (form.size == 4) {
          code_.movd(destination, ptr[rdx]);
        } else {
          code_.movq(destination, ptr[rdx]);
        }
        written = in.reg;
      } else if (in.memory) {
        const Xbyak::Xmm source = simd_slot(in.reg, true);
        emit_simd_available_check(slow);
        emit_simd_memory(in, form, AccessType::kWrite, form.size, slow);
        if (form.size == 4) {
          code_.movd(ptr[rdx], source);
        } else {
          code_.movq(ptr[rdx], source);
        }
      } else {
        // Between registers only the low lane moves (0F 10: reg <- rm, 0F 11: rm <- reg).
        const uint8_t from = load ? in.rm : in.reg, to = load ? in.reg : in.rm;
        const Xbyak::Xmm source = simd_slot(from, true);
        const Xbyak::Xmm destination = simd_slot(to, true);
        emit_simd_available_check(slow);
        if (form.size == 4) {
          code_.movss(destination, source);
        } else {
          code_.movsd(destination, source);
        }
        written = to;
      }
      break;
    }
    case SimdKind::kNone: break;
  }
  // A failed availability check reaches `done` only through a handler that did not raise,
  // so SSE is available after it either way. A register form after the check has no slow
  // path: nothing in it can fail. The slow path's handler call stores the cached XMM
  // registers first and loads them again after (emit_call_and_checks).
  if (in.memory || !checked_before) join_slow_path(in, index, slow, done);
  if (written) mark_xmm_written(*written);
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
