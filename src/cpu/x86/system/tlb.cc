#include "cpu/x86/system/tlb.h"

#include <algorithm>

namespace lamina::cpu::x86 {

void Tlb::insert(uint64_t linear, const Translation& translation, const PagingRegisters& registers,
                 std::byte* host_page, TlbTraps traps) {
  // Only canonical pages are cached (tlb.h): a non-canonical address then never hits, and
  // translated code's inline lookup needs no canonical check of its own. The core walks one
  // only for the second half of a split access.
  if (!is_canonical(linear)) return;
  uint64_t page = linear & ~kPageMask;
  TlbEntry& entry = entries_[index(linear)];
  entry.tag = page;
  uint64_t flags = translation.global ? TlbEntry::kGlobal : 0;
  for (bool user : {false, true}) {
    for (AccessType type : {AccessType::kRead, AccessType::kWrite, AccessType::kExecute}) {
      unsigned slot = TlbEntry::slot(type, user);
      // SMAP's EFLAGS.AC exception is left to the slow path: the entry assumes AC = 0.
      bool permitted = access_permitted(translation, registers, AccessContext{type, user, false});
      // A write through a page whose dirty flag is clear must walk so the flag gets set.
      if (type == AccessType::kWrite && !translation.dirty) permitted = false;
      if (permitted) flags |= uint64_t{1} << slot;
      const bool data = type != AccessType::kExecute;
      const bool trapped = (type == AccessType::kWrite && traps.writes) ||
                           (data && (traps.data || (user && traps.user_data)));
      bool fast = permitted && host_page != nullptr && !trapped;
      entry.host[slot] = fast ? host_page : nullptr;
    }
  }
  entry.physical_and_flags = (translation.physical & ~kPageMask) | flags;
  if (translation.page_size > 4096) {
    uint64_t base = linear & ~(translation.page_size - 1);
    large_low_ = std::min(large_low_, base);
    large_high_ = std::max(large_high_, base + (translation.page_size - 1));
  }
}

void Tlb::flush_all() {
  for (TlbEntry& entry : entries_) entry.tag = TlbEntry::kInvalidTag;
  large_low_ = ~uint64_t{0};
  large_high_ = 0;
}

void Tlb::flush_non_global() {
  // The large-page range is kept: a global large page may still be cached.
  for (TlbEntry& entry : entries_) {
    if (!entry.global()) entry.tag = TlbEntry::kInvalidTag;
  }
}

bool Tlb::invalidate_page(uint64_t linear) {
  if (linear >= large_low_ && linear <= large_high_) {
    flush_all();
    return true;
  }
  TlbEntry& entry = entries_[index(linear)];
  if (entry.tag == (linear & ~kPageMask)) entry.tag = TlbEntry::kInvalidTag;
  return false;
}

void Tlb::trap_writes_to_physical(uint64_t physical_page) {
  uint64_t page = physical_page & ~kPageMask;
  for (TlbEntry& entry : entries_) {
    if (entry.tag == TlbEntry::kInvalidTag || entry.physical_page() != page) continue;
    entry.host[TlbEntry::slot(AccessType::kWrite, false)] = nullptr;
    entry.host[TlbEntry::slot(AccessType::kWrite, true)] = nullptr;
  }
}

void Tlb::trap_all_writes() {
  for (TlbEntry& entry : entries_) {
    entry.host[TlbEntry::slot(AccessType::kWrite, false)] = nullptr;
    entry.host[TlbEntry::slot(AccessType::kWrite, true)] = nullptr;
  }
}

void Tlb::trap_data(bool user_only) {
  for (TlbEntry& entry : entries_) {
    for (bool user : {false, true}) {
      if (!user && user_only) continue;
      entry.host[TlbEntry::slot(AccessType::kRead, user)] = nullptr;
      entry.host[TlbEntry::slot(AccessType::kWrite, user)] = nullptr;
    }
  }
}

}  // namespace lamina::cpu::x86
