// Guest XMM registers in host ones (64-bit mode): while a block runs inlined SSE forms
// (translator_simd.cc, translator_sse_float.cc) and register-only integer code between them,
// guest xmm0-15 live in host xmm2-xmm15, loaded on first use and written back before anything
// else: any other instruction forgets them (forget_xmms), so handlers, faults and the next
// block always find them in CpuState. Host XMM registers are caller-saved, so a C
// call made while some are cached (emit_runtime_call, handler calls too) stores the dirty ones
// first and loads every cached one after it: a handler may have written them.
//
// Slots are taken before an instruction's first jump to its slow path (simd_slot), so the
// fast and slow paths of one instruction share one mapping; a slot evicted then is stored in
// straight-line code both paths run.
#include "cpu/x86/jit/translator.h"

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;

// Host xmm0 and xmm1 are the SSE forms' scratch registers; the rest hold guest registers.
constexpr int kFirstSlotXmm = 2;

}  // namespace

Xbyak::Xmm Translator::simd_slot(uint8_t guest, bool load) {
  guest &= 15;
  ++xmm_clock_;
  if (xmm_slot_of_[guest] >= 0) {
    cached_xmms_[static_cast<size_t>(xmm_slot_of_[guest])].used = xmm_clock_;
    return Xbyak::Xmm(kFirstSlotXmm + xmm_slot_of_[guest]);
  }
  const size_t chosen = slot_to_take(cached_xmms_);
  CachedRegister& slot = cached_xmms_[chosen];
  const Xbyak::Xmm host(kFirstSlotXmm + static_cast<int>(chosen));
  if (slot.guest >= 0) {
    if (slot.dirty) code_.movdqu(xmm_register(static_cast<uint8_t>(slot.guest)), host);
    xmm_slot_of_[static_cast<size_t>(slot.guest)] = -1;
  }
  slot = CachedRegister{static_cast<int8_t>(guest), false, xmm_clock_};
  xmm_slot_of_[guest] = static_cast<int8_t>(chosen);
  if (load) code_.movdqu(host, xmm_register(guest));
  return host;
}

void Translator::mark_xmm_written(uint8_t guest) {
  const int8_t slot = xmm_slot_of_[guest & 15];
  if (slot >= 0) cached_xmms_[static_cast<size_t>(slot)].dirty = true;
}

void Translator::store_dirty_xmms() {
  for (size_t slot = 0; slot < kCachedXmms; ++slot) {
    const CachedRegister& cached = cached_xmms_[slot];
    if (cached.guest >= 0 && cached.dirty) {
      code_.movdqu(xmm_register(static_cast<uint8_t>(cached.guest)), Xbyak::Xmm(kFirstSlotXmm + static_cast<int>(slot)));
    }
  }
}

void Translator::reload_xmms() {
  for (size_t slot = 0; slot < kCachedXmms; ++slot) {
    const CachedRegister& cached = cached_xmms_[slot];
    if (cached.guest >= 0) {
      code_.movdqu(Xbyak::Xmm(kFirstSlotXmm + static_cast<int>(slot)), xmm_register(static_cast<uint8_t>(cached.guest)));
    }
  }
}

void Translator::forget_xmms() {
  store_dirty_xmms();
  drop_xmms();
}

void Translator::drop_xmms() {
  cached_xmms_.fill(CachedRegister{});
  xmm_slot_of_.fill(-1);
}

void Translator::emit_runtime_call(const void* function) {
  // C++ runs with the host's MXCSR (the handler stub switches itself; the arguments are in
  // rdi-r9 already, the flags are the call's to clobber).
  if (function != handler_stub_) emit_mxcsr_switch_out(0, eax);
  store_dirty_xmms();
  code_.mov(rax, reinterpret_cast<uint64_t>(function));
  code_.call(rax);
  reload_xmms();
}

}  // namespace lamina::cpu::x86::jit
