#pragma once
// A soft TLB for one vCPU: a direct-mapped cache from 4 KiB linear pages to host pages, laid out
// as QEMU's softmmu lays out its TLB, so the memory fast path (the core's read_linear and the
// JIT's inline lookup) is one index, one compare and one load: per privilege (user, supervisor)
// a table of TlbEntry, each with a tag per access type (read, write, fetch) and one addend.
// A tag holds the page only when that access may go straight to RAM at host address
// linear + addend; otherwise it is invalid, and the access takes the slow path (page walk,
// MMIO, fault). That is the case when the page is not RAM, the access is not permitted, a
// write would have to set the dirty flag first, or the core asked for the access to be trapped
// (TlbTraps: writes to pages holding decoded code, for self-modifying-code detection; data
// accesses it must check one by one, for alignment checks and data breakpoints). What the slow
// paths and flushes need (the page whatever its rights, the guest-physical page, the rights,
// global) lives apart in TlbPage, off the fast path's cache lines.
//
// Each entry bakes in the rights as computed under the paging registers given at insert time, so
// the core must flush_all() whenever CR0.PG/WP, CR4.PSE/PAE/PGE/SMEP/SMAP/PCIDE or EFER.NXE/LMA
// change, flush_non_global() on a CR3 load (SDM 4.10.4.1), and invalidate_page() on INVLPG.
// Large pages are cached as 4 KiB slices; INVLPG in any linear range that held a large page
// flushes everything (SDM 4.10.4.1 requires all slices to go; flushing more is allowed).
// PCID is not supported: every CR3 load flushes non-global entries.
//
// Keys are the linear addresses the core forms (32-bit in legacy modes). An access crossing a
// page boundary must be split by the core before lookup. Only canonical pages are ever cached
// (insert drops others), and an entry only ever holds a page whose index is its own: so a
// lookup that compares the tag with the page of an operand's last byte misses both for a
// non-canonical address and for an access that crosses a page (the JIT's inline lookup).
//
// Ownership: owns its entries; host pages borrow GuestMemory, which outlives the TLB.
// Thread-safety: one TLB per vCPU, used only by that vCPU's thread; remote shootdowns arrive
// through the guest's IPIs and are executed by the owning vCPU.

#include <array>
#include <cstddef>
#include <cstdint>

#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {

// The fast path's part of one page for one privilege: 32 bytes, two entries a cache line, so a
// privilege's table (4096 entries, 128 KiB) is half the footprint of one 64-byte entry per page.
struct alignas(32) TlbEntry {
  static constexpr uint64_t kInvalidTag = 1;  // never a page-aligned address

  // Per AccessType: the linear page base when that access may use linear + addend, else
  // kInvalidTag. A valid tag always equals its TlbPage's tag.
  std::array<uint64_t, 3> tag{kInvalidTag, kInvalidTag, kInvalidTag};
  // Host address of the page's first byte minus the linear page base (modulo 2^64): meaningful
  // only while a tag is valid.
  uint64_t addend = 0;

  bool fast(AccessType type) const { return tag[static_cast<unsigned>(type)] != kInvalidTag; }
};
static_assert(sizeof(TlbEntry) == 32);

// The rest of what the TLB caches for a page, for the slow paths and the flushes.
struct TlbPage {
  static constexpr uint64_t kGlobal = uint64_t{1} << 6;

  uint64_t tag = TlbEntry::kInvalidTag;  // linear page base, whatever the accesses allowed
  // The guest-physical base of this 4 KiB page; its low 12 bits (zero in a page address) hold
  // the `permitted` bit per [user][access type] (bits 0-5) and the global flag (bit 6).
  uint64_t physical_and_flags = 0;

  static constexpr unsigned slot(AccessType type, bool user) {
    return (user ? 3u : 0u) + static_cast<unsigned>(type);
  }
  uint64_t physical_page() const { return physical_and_flags & ~uint64_t{0xfff}; }
  bool global() const { return (physical_and_flags & kGlobal) != 0; }
  // Whether the access may use physical_page() without walking again (also for MMIO pages).
  bool permits(AccessType type, bool user) const {
    return (physical_and_flags >> slot(type, user)) & 1;
  }
};

// Accesses an insert keeps on the slow path although the page permits them.
struct TlbTraps {
  bool writes = false;     // every write (a page with decoded code; or filled by a read)
  bool data = false;       // every read and write (a data breakpoint lies in the page)
  bool user_data = false;  // user reads and writes (alignment checking is armed)
};

class Tlb {
 public:
  // A power of two. Fixed, so the core's fast path indexes an array at a known place in its
  // working set. 4096 entries keep the conflict misses of a kernel plus a few processes rare;
  // flushes cost what was filled (`filled_`).
  static constexpr size_t kEntries = 4096;

  Tlb() = default;
  // current_table_ points into this object.
  Tlb(const Tlb&) = delete;
  Tlb& operator=(const Tlb&) = delete;

  // Host pointer to the byte at `linear` when this access may go straight to RAM, else nullptr.
  std::byte* lookup(uint64_t linear, AccessType type, bool user) const {
    const TlbEntry& entry = tables_[user ? 1 : 0][index(linear)];
    if (entry.tag[static_cast<unsigned>(type)] != (linear & ~kPageMask)) return nullptr;
    return reinterpret_cast<std::byte*>(linear + entry.addend);
  }

  // What is cached for `linear`'s page (whatever the fast accesses), or nullptr.
  const TlbPage* find(uint64_t linear) const {
    const TlbPage& page = pages_[index(linear)];
    return page.tag == (linear & ~kPageMask) ? &page : nullptr;
  }

  // Caches the 4 KiB page of `linear` from a successful walk. `host_page` is the host pointer to
  // the guest-physical 4 KiB page (GuestMemory::host_pointer(physical & ~0xfff, 4096)) or null
  // when it is not RAM; `traps` keeps accesses on the slow path.
  void insert(uint64_t linear, const Translation& translation, const PagingRegisters& registers,
              std::byte* host_page, TlbTraps traps = {});

  void flush_all();
  // A CR3 load: drops every entry not marked global.
  void flush_non_global();
  // INVLPG: drops the page of `linear` (global or not), or everything when it lies in the range
  // of a cached large page; true in that case.
  bool invalidate_page(uint64_t linear);
  // Sends writes to the guest-physical page at `physical_page` (4 KiB aligned) to the slow path
  // in every entry that maps it, e.g. when the core decodes code from that page.
  void trap_writes_to_physical(uint64_t physical_page);
  // Sends every write to the slow path (another vCPU decoded code on a page: SharedCodePages).
  void trap_all_writes();
  // Sends reads and writes (of user mode only: `user_only`) to the slow path, where the core
  // checks alignment and data breakpoints; fetches stay.
  void trap_data(bool user_only);

  static constexpr size_t size() { return kEntries; }
  // The privilege translated code's accesses use (the core's CPL is 3: user); the core keeps it
  // with its CPL (CpuCore::update_mode).
  void set_user(bool user) { current_table_ = tables_[user ? 1 : 0].data(); }
  // Where the current privilege's table is: a pointer to an array of kEntries TlbEntry indexed
  // by (linear >> 12) & (kEntries - 1), for code that does the lookup itself (the JIT's inline
  // memory accesses load it, off the address's dependency chain).
  const TlbEntry* const* current_table() const { return &current_table_; }
  // The fast-path entry of `linear`'s index for a privilege (tests).
  const TlbEntry& entry(uint64_t linear, bool user) const { return tables_[user ? 1 : 0][index(linear)]; }

 private:
  static constexpr uint64_t kPageMask = 0xfff;
  using Table = std::array<TlbEntry, kEntries>;

  static size_t index(uint64_t linear) { return (linear >> 12) & (kEntries - 1); }
  // Calls `visit(index)` for every entry filled since it was last dropped by a flush; a visit
  // returning false clears the entry's bit (the flush dropped it).
  template <typename Visit>
  void for_each_filled(Visit visit);
  // Makes entry `index` miss for every access and privilege, and find() miss.
  void drop(size_t index);
  // Sends `type` of privilege `user` at entry `index` to the slow path.
  void trap(size_t index, bool user, AccessType type) {
    tables_[user ? 1 : 0][index].tag[static_cast<unsigned>(type)] = TlbEntry::kInvalidTag;
  }

  // [supervisor, user]: the fast path's entries.
  std::array<Table, 2> tables_{};
  // Per index, shared by both privileges: the page, its physical page, rights and global flag.
  std::array<TlbPage, kEntries> pages_{};
  const TlbEntry* current_table_ = tables_[0].data();
  // One bit per entry that insert() filled and no flush has dropped since (an INVLPG leaves the
  // bit: the entry is then invalid, which every pass tolerates). Flushes and the trap passes
  // walk only these, so a CR3 load costs what the address space used, not kEntries.
  std::array<uint64_t, kEntries / 64> filled_{};
  // Smallest range covering every large page cached since the last flush_all.
  uint64_t large_low_ = ~uint64_t{0};
  uint64_t large_high_ = 0;  // inclusive
};

}  // namespace lamina::cpu::x86
