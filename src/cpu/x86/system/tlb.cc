#include "cpu/x86/system/tlb.h"

#include <algorithm>
#include <bit>

namespace lamina::cpu::x86 {

template <typename Visit>
void Tlb::for_each_filled(Visit visit) {
  for (size_t word = 0; word < filled_.size(); ++word) {
    uint64_t bits = filled_[word];
    uint64_t kept = bits;
    while (bits != 0) {
      const unsigned bit = static_cast<unsigned>(std::countr_zero(bits));
      bits &= bits - 1;
      if (!visit(word * 64 + bit)) kept &= ~(uint64_t{1} << bit);
    }
    filled_[word] = kept;
  }
}

void Tlb::drop(size_t index) {
  pages_[index].tag = TlbEntry::kInvalidTag;
  for (Table& table : tables_) table[index].tag.fill(TlbEntry::kInvalidTag);
}

void Tlb::insert(uint64_t linear, const Translation& translation, const PagingRegisters& registers,
                 std::byte* host_page, TlbTraps traps) {
  // Only canonical pages are cached (tlb.h): a non-canonical address then never hits, and
  // translated code's inline lookup needs no canonical check of its own. The core walks one
  // only for the second half of a split access.
  if (!is_canonical(linear)) return;
  const uint64_t page = linear & ~kPageMask;
  const size_t slot_index = index(linear);
  filled_[slot_index / 64] |= uint64_t{1} << (slot_index % 64);
  uint64_t flags = translation.global ? TlbPage::kGlobal : 0;
  // Wraps modulo 2^64 as intended: linear + addend is the host address.
  const uint64_t addend = reinterpret_cast<uintptr_t>(host_page) - page;
  for (bool user : {false, true}) {
    TlbEntry& entry = tables_[user ? 1 : 0][slot_index];
    entry.addend = addend;
    for (AccessType type : {AccessType::kRead, AccessType::kWrite, AccessType::kExecute}) {
      // SMAP's EFLAGS.AC exception is left to the slow path: the entry assumes AC = 0.
      bool permitted = access_permitted(translation, registers, AccessContext{type, user, false});
      // A write through a page whose dirty flag is clear must walk so the flag gets set.
      if (type == AccessType::kWrite && !translation.dirty) permitted = false;
      if (permitted) flags |= uint64_t{1} << TlbPage::slot(type, user);
      const bool data = type != AccessType::kExecute;
      const bool trapped = (type == AccessType::kWrite && traps.writes) ||
                           (data && (traps.data || (user && traps.user_data)));
      const bool fast = permitted && host_page != nullptr && !trapped;
      entry.tag[static_cast<unsigned>(type)] = fast ? page : TlbEntry::kInvalidTag;
    }
  }
  pages_[slot_index] = TlbPage{.tag = page, .physical_and_flags = (translation.physical & ~kPageMask) | flags};
  if (translation.page_size > 4096) {
    uint64_t base = linear & ~(translation.page_size - 1);
    large_low_ = std::min(large_low_, base);
    large_high_ = std::max(large_high_, base + (translation.page_size - 1));
  }
}

void Tlb::flush_all() {
  for_each_filled([this](size_t index) {
    drop(index);
    return false;
  });
  large_low_ = ~uint64_t{0};
  large_high_ = 0;
}

void Tlb::flush_non_global() {
  // The large-page range is kept: a global large page may still be cached.
  for_each_filled([this](size_t index) {
    const TlbPage& page = pages_[index];
    if (page.tag != TlbEntry::kInvalidTag && page.global()) return true;
    drop(index);
    return false;
  });
}

bool Tlb::invalidate_page(uint64_t linear) {
  if (linear >= large_low_ && linear <= large_high_) {
    flush_all();
    return true;
  }
  const size_t slot_index = index(linear);
  if (pages_[slot_index].tag == (linear & ~kPageMask)) drop(slot_index);
  return false;
}

void Tlb::trap_writes_to_physical(uint64_t physical_page) {
  uint64_t page = physical_page & ~kPageMask;
  // Entries never filled, or dropped, have no valid tags a lookup could use: insert writes all
  // six before one can match again.
  for_each_filled([this, page](size_t index) {
    if (pages_[index].physical_page() == page) {
      trap(index, false, AccessType::kWrite);
      trap(index, true, AccessType::kWrite);
    }
    return true;
  });
}

void Tlb::trap_all_writes() {
  for_each_filled([this](size_t index) {
    trap(index, false, AccessType::kWrite);
    trap(index, true, AccessType::kWrite);
    return true;
  });
}

void Tlb::trap_data(bool user_only) {
  for_each_filled([this, user_only](size_t index) {
    for (bool user : {false, true}) {
      if (!user && user_only) continue;
      trap(index, user, AccessType::kRead);
      trap(index, user, AccessType::kWrite);
    }
    return true;
  });
}

}  // namespace lamina::cpu::x86
