// REP MOVS and REP STOS in 64-bit mode, forwards (DF clear), 64-bit addresses, DS/ES-based
// (base 0): up to two chunks inline, each the host's own REP MOVS/STOS of the same element size
// on the soft TLB's host pointers, as many elements as lie within the current page of the
// source and of the destination. A guest's memcpy and memset of unknown size at -Os are REP
// MOVSB/STOSB, mostly of a few bytes (busybox's inflate copies 4-7 bytes per match), which
// the handler call cost far more than the copy.
//
// Exact because a REP string instruction is architecturally interruptible between elements
// (SDM vol. 2, REP; vol. 1, 7.3.9): after a chunk RSI, RDI and RCX are written back as the
// elements done leave them, and whatever remains (a miss: MMIO, a trapped write to a code page,
// an unset dirty bit, a fault; an element crossing a page; DF set; more than two chunks) goes
// to the handler, which carries on from that state (string_handlers.cc). The host's REP
// MOVS has the same element-by-element result as the guest's for overlapping operands
// (SDM vol. 2, MOVS), and host DF is clear in generated code (the ABI's state, never changed).
// MOVS and STOS leave the flags alone.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;
using Xbyak::CodeGenerator;

// Chunks done inline before the handler takes over: a copy crossing one page boundary on
// each side stays inline; a long one yields to the handler's bounded steps.
constexpr int kInlineChunks = 2;

unsigned log2_of(uint8_t size) { return size == 8 ? 3 : size == 4 ? 2 : size == 2 ? 1 : 0; }

}  // namespace

bool Translator::emit_repeat_string(const Instruction& in, size_t index) {
  const uint16_t op = in.opcode;
  const bool move = op == 0xa4 || op == 0xa5;
  const bool store = op == 0xaa || op == 0xab;
  if (mode_ != CodeMode::k64 || (!move && !store) || in.rep == 0 || in.address_size != 8) return false;
  // The source's segment: FS and GS have bases of their own (the handler adds them).
  if (move && (in.segment == kFs || in.segment == kGs)) return false;
  const uint8_t size = (op & 1) ? in.operand_size : 1;
  const unsigned shift = log2_of(size);
  const std::optional<KnownFlags> flags = known_flags_;
  Xbyak::Label slow, done;
  const int32_t rcx_field = layout_.gpr + 8 * kRcx;
  const int32_t rsi_field = layout_.gpr + 8 * kRsi;
  const int32_t rdi_field = layout_.gpr + 8 * kRdi;
  // Backwards (DF set): the handler.
  code_.test(field(layout_.rflags, 4), static_cast<uint32_t>(rflags::kDf));
  code_.jnz(slow, CodeGenerator::T_NEAR);
  for (int chunk = 0; chunk < kInlineChunks; ++chunk) {
    // r9 = the elements left; none: done (no access at all, as the handler).
    code_.mov(r9, field(rcx_field, 8));
    code_.test(r9, r9);
    code_.jz(done, CodeGenerator::T_NEAR);
    // r10 = the destination, r8 = the source (linear: ES and DS have base 0 here).
    code_.mov(r10, field(rdi_field, 8));
    // edx = the bytes left in the destination's page (1-4096), then in the source's.
    code_.mov(eax, r10d);
    code_.and_(eax, 0xfff);
    code_.mov(edx, 4096);
    code_.sub(edx, eax);
    if (move) {
      code_.mov(r8, field(rsi_field, 8));
      code_.mov(eax, r8d);
      code_.and_(eax, 0xfff);
      code_.mov(ecx, 4096);
      code_.sub(ecx, eax);
      code_.cmp(edx, ecx);
      code_.cmova(edx, ecx);
    }
    // r11 = the whole elements in both pages, at most the count; none (an element crossing a
    // page): the handler.
    if (shift != 0) code_.shr(edx, static_cast<uint8_t>(shift));
    code_.mov(r11d, edx);
    code_.cmp(r9, r11);
    code_.cmovb(r11, r9);
    code_.test(r11, r11);
    code_.jz(slow, CodeGenerator::T_NEAR);
    // The host pointers: the source's read slot first (kept in r8), then the
    // destination's write slot; each lookup checks only the page of the chunk's first byte,
    // and the chunk lies within it.
    if (move) {
      code_.mov(rax, r8);
      emit_tlb_lookup(AccessType::kRead, 1, slow);
      code_.mov(r8, rdx);
    }
    code_.mov(rax, r10);
    emit_tlb_lookup(AccessType::kWrite, 1, slow);
    code_.mov(rdi, rdx);
    code_.mov(rcx, r11);
    if (move) {
      code_.mov(rsi, r8);
      code_.rep();
      switch (size) {
        case 1: code_.movsb(); break;
        case 2: code_.movsw(); break;
        case 4: code_.movsd(); break;
        default: code_.movsq(); break;
      }
    } else {
      code_.mov(rax, field(layout_.gpr + 8 * kRax, 8));
      code_.rep();
      switch (size) {
        case 1: code_.stosb(); break;
        case 2: code_.stosw(); break;
        case 4: code_.stosd(); break;
        default: code_.stosq(); break;
      }
    }
    // The guest's registers as the elements done leave them.
    code_.sub(field(rcx_field, 8), r11);
    if (shift != 0) code_.shl(r11, static_cast<uint8_t>(shift));
    code_.add(field(rdi_field, 8), r11);
    if (move) code_.add(field(rsi_field, 8), r11);
  }
  // Still elements left after the inline chunks: the handler does the rest.
  code_.cmp(field(rcx_field, 8), 0);
  code_.jne(slow, CodeGenerator::T_NEAR);
  join_slow_path(in, index, slow, done);
  known_flags_ = flags;  // MOVS and STOS change no flags
  pending_rip_ += in.length;
  return true;
}

}  // namespace lamina::cpu::x86::jit
