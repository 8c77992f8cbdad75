// Guest registers in host registers: within a run of register-only instructions (no handler,
// no memory access, no fault) and the inlined memory forms of translator_memory.cc, a guest
// register is loaded from CpuState into one of nine host registers on first use and stays
// there, written back when evicted, before any other instruction and at the block's end. A
// memory form's fast path cannot fault; its out-of-line slow path writes the dirty registers
// back before the handler runs (so a fault sees exact registers in CpuState) and loads the
// mapping the fast path ends with again after it, so both paths join with the same mapping.
#include "cpu/x86/jit/translator.h"

#include <iterator>

namespace lamina::cpu::x86::jit {
namespace {

using namespace Xbyak::util;

// Callee-saved (SysV) first: they survive the one C call inside register-only code
// (lamina_jit_carry), before which the caller-saved ones are given up. The emitters' scratch
// registers (rax, rcx, rdx, rsi, rdi) and the core (rbx) are not among them; r8 is scratch only
// outside register-only code, where nothing is cached.
const Xbyak::Reg64 kHostRegisters[] = {r12, r13, r14, r15, rbp, r8, r9, r10, r11};
constexpr size_t kFirstCallerSaved = 5;

}  // namespace

bool Translator::high_byte(uint8_t index, uint8_t size, bool rex) {
  return size == 1 && !rex && index >= 4 && index < 8;
}

void Translator::mark_written(uint8_t index) {
  cached_[static_cast<size_t>(slot_of_[index])].dirty = true;
}

void Translator::write_back_mapping(const RegisterMapping& mapping) {
  for (size_t slot = 0; slot < kCachedRegisters; ++slot) {
    if (mapping[slot] < 0 || (mapping[slot] & kMappedDirty) == 0) continue;
    code_.mov(field(layout_.gpr + 8 * (mapping[slot] & kMappedGuest), 8), kHostRegisters[slot]);
  }
}

void Translator::reload_mapping_after_call(const RegisterMapping& before, const RegisterMapping& mapping) {
  for (size_t slot = 0; slot < kCachedRegisters; ++slot) {
    if (mapping[slot] < 0) continue;
    // A callee-saved register that held the same guest register before the call and that the
    // instruction does not write (clean) survived it.
    const bool same = before[slot] >= 0 && (before[slot] & kMappedGuest) == (mapping[slot] & kMappedGuest);
    if (slot < kFirstCallerSaved && same && (mapping[slot] & kMappedDirty) == 0) continue;
    code_.mov(kHostRegisters[slot], field(layout_.gpr + 8 * (mapping[slot] & kMappedGuest), 8));
  }
}

size_t Translator::slot_to_take(std::span<const CachedRegister> slots) {
  size_t pick = 0;
  for (size_t candidate = 0; candidate < slots.size(); ++candidate) {
    if (slots[candidate].guest < 0) return candidate;
    if (slots[candidate].used < slots[pick].used) pick = candidate;
  }
  return pick;
}

Xbyak::Reg64 Translator::cached_register(uint8_t index, bool load) {
  static_assert(std::size(kHostRegisters) == kCachedRegisters);
  static_assert(std::tuple_size_v<RegisterMapping> == kCachedRegisters);
  int8_t slot = slot_of_[index];
  if (slot < 0) {
    // (an instruction uses at most three)
    const size_t pick = slot_to_take(cached_);
    evict(pick);
    slot = static_cast<int8_t>(pick);
    cached_[pick].guest = static_cast<int8_t>(index);
    slot_of_[index] = slot;
    if (load) code_.mov(kHostRegisters[pick], field(layout_.gpr + 8 * index, 8));
  }
  cached_[static_cast<size_t>(slot)].used = ++use_clock_;
  return kHostRegisters[static_cast<size_t>(slot)];
}

void Translator::evict(size_t slot) {
  CachedRegister& cached = cached_[slot];
  if (cached.guest < 0) return;
  if (cached.dirty) code_.mov(field(layout_.gpr + 8 * cached.guest, 8), kHostRegisters[slot]);
  slot_of_[static_cast<size_t>(cached.guest)] = -1;
  cached = CachedRegister{};
}

void Translator::forget_registers() {
  for (size_t slot = 0; slot < kCachedRegisters; ++slot) evict(slot);
}

void Translator::preload_registers(const RegisterMapping& mapping) {
  for (size_t slot = 0; slot < kCachedRegisters; ++slot) {
    if (mapping[slot] < 0) continue;
    const auto guest = static_cast<int8_t>(mapping[slot] & kMappedGuest);
    // Dirty as the back edge leaves it (written back there only on the way out); for the
    // entry from outside that only costs a store of an unchanged value.
    cached_[slot] = CachedRegister{guest, (mapping[slot] & kMappedDirty) != 0, ++use_clock_};
    slot_of_[static_cast<size_t>(guest)] = static_cast<int8_t>(slot);
    code_.mov(kHostRegisters[slot], field(layout_.gpr + 8 * guest, 8));
  }
}

Translator::RegisterMapping Translator::current_mapping() const {
  RegisterMapping mapping;
  for (size_t slot = 0; slot < kCachedRegisters; ++slot) {
    const CachedRegister& cached = cached_[slot];
    mapping[slot] = cached.guest < 0 ? int8_t{-1}
                                     : static_cast<int8_t>(cached.guest | (cached.dirty ? kMappedDirty : 0));
  }
  return mapping;
}

void Translator::write_back_registers() {
  for (size_t slot = 0; slot < kCachedRegisters; ++slot) {
    const CachedRegister& cached = cached_[slot];
    if (cached.guest >= 0 && cached.dirty) code_.mov(field(layout_.gpr + 8 * cached.guest, 8), kHostRegisters[slot]);
  }
}

void Translator::drop_registers() {
  cached_.fill(CachedRegister{});
  slot_of_.fill(-1);
}

bool Translator::holds_caller_saved(const RegisterMapping& mapping) {
  for (size_t slot = kFirstCallerSaved; slot < kCachedRegisters; ++slot)
    if (mapping[slot] >= 0) return true;
  return false;
}

void Translator::forget_caller_saved_registers() {
  for (size_t slot = kFirstCallerSaved; slot < kCachedRegisters; ++slot) evict(slot);
}

void Translator::add_guest_register(const Xbyak::Reg64& to, uint8_t index) {
  if (caching_) {
    code_.add(to, cached_register(index, true));
  } else {
    code_.add(to, field(layout_.gpr + 8 * index, 8));
  }
}

void Translator::load_register(const Xbyak::Reg64& to, uint8_t index, uint8_t size, bool rex) {
  if (!caching_) {
    const Xbyak::Address source = guest_register(index, size, rex);
    if (size == 1 || size == 2) {
      code_.movzx(to.cvt32(), source);
    } else {
      code_.mov(sized(to, size), source);
    }
    return;
  }
  if (high_byte(index, size, rex)) {
    // AH, CH, DH, BH: byte 1 of registers 0-3.
    code_.mov(to, cached_register(static_cast<uint8_t>(index - 4), true));
    code_.shr(to, 8);
    code_.movzx(to.cvt32(), to.cvt8());
    return;
  }
  const Xbyak::Reg64 host = cached_register(index, true);
  switch (size) {
    case 1: code_.movzx(to.cvt32(), host.cvt8()); break;
    case 2: code_.movzx(to.cvt32(), host.cvt16()); break;
    case 4: code_.mov(to.cvt32(), host.cvt32()); break;
    default: code_.mov(to, host); break;
  }
}

void Translator::store_register(uint8_t index, uint8_t size, bool rex, const Xbyak::Reg64& from) {
  if (!caching_) {
    // 32-bit writes zero the upper half (SDM vol. 1, 3.4.1.1): `from` is zero-extended already.
    code_.mov(guest_register(index, size == 4 ? 8 : size, rex), sized(from, size == 4 ? 8 : size));
    return;
  }
  if (high_byte(index, size, rex)) {
    // Byte 1 of the register: rotated into byte 0 and back (the flags are stored by now).
    const Xbyak::Reg64 host = cached_register(static_cast<uint8_t>(index - 4), true);
    code_.ror(host, 8);
    code_.mov(host.cvt8(), from.cvt8());
    code_.rol(host, 8);
    mark_written(static_cast<uint8_t>(index - 4));
    return;
  }
  // 8- and 16-bit writes keep the rest of the register; 32-bit ones zero the upper half.
  const Xbyak::Reg64 host = cached_register(index, size <= 2);
  switch (size) {
    case 1: code_.mov(host.cvt8(), from.cvt8()); break;
    case 2: code_.mov(host.cvt16(), from.cvt16()); break;
    case 4: code_.mov(host.cvt32(), from.cvt32()); break;
    default: code_.mov(host, from); break;
  }
  mark_written(index);
}

}  // namespace lamina::cpu::x86::jit
