#pragma once
// The x86 page-table walk: translates a linear address to a guest-physical one for 32-bit paging
// (with PSE 4 MiB pages and PSE-36), PAE paging and 4-level long-mode paging, checks the access
// rights and sets the accessed/dirty flags. Intel SDM Vol. 3A ch. 4; AMD APM Vol. 2 ch. 5.
//
// What the walker does NOT do (the core's job):
//  - canonical checks: a non-canonical linear address raises #GP/#SS before paging; the walker
//    uses bits 47:0 in 4-level paging and bits 31:0 in the other modes (so 32-bit addresses wrap);
//  - loading CR3/CR0/CR4: load_pae_pdptes() gives the PDPTE-register semantics (and the #GP(0)
//    check) for the core to call on those loads; without loaded PDPTEs the walk reads them from
//    memory each time;
//  - TLB caching and flushing (see tlb.h); PCID and LA57 are not supported.
//
// Choices where the architecture leaves room (documented so tests and the core agree):
//  - accessed flags are set only when the whole translation succeeds (SDM 4.8 allows setting
//    them "speculatively"; not setting them for a faulting walk is also allowed);
//  - flags are written with an atomic compare-exchange on the host memory so several vCPUs can
//    walk the same tables; a lost race restarts the walk (bounded, then an atomic OR);
//  - a paging-structure entry that is not in RAM (MMIO, a hole) makes the walk fail with a #PF
//    carrying P|RSVD (what all-ones from an unclaimed bus would give in PAE/4-level paging) and
//    PageFault::table_outside_ram set, so the core can also log it or stop the VM.
//
// Thread-safety: pure functions; concurrent walks of shared guest tables are safe.

#include <array>
#include <cstdint>
#include <expected>
#include <optional>

#include "base/guest_memory.h"
#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {

enum class AccessType : uint8_t { kRead, kWrite, kExecute };

// The inputs of a walk. pae_pdptes are the four PDPTE registers of PAE paging when the core has
// loaded them at a CR3/CR0/CR4 write (load_pae_pdptes); otherwise the walk reads them.
struct PagingRegisters {
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
  std::array<uint64_t, 4> pae_pdptes{};
  bool pae_pdptes_loaded = false;
  // The chipset's A20 gate: bit 20 is clear while A20 is off. Applied to the address of every
  // paging-structure entry the walk or a PDPTE load reads (the core applies it to the result).
  uint64_t a20_mask = ~uint64_t{0};
};

// Model-specific paging capabilities; must match what CPUID advertises.
struct PagingFeatures {
  uint8_t physical_address_bits = 40;  // MAXPHYADDR, CPUID 0x80000008 EAX[7:0]; 32..52
  bool gigabyte_pages = true;          // CPUID 0x80000001 EDX[26]
  bool pse36 = true;                   // CPUID 1 EDX[17]
};

struct AccessContext {
  AccessType type = AccessType::kRead;
  // A user-mode access: CPL 3 and not an implicit supervisor access (descriptor tables, TSS,
  // IDT, shadow stack). Implicit accesses at CPL 3 are supervisor accesses (SDM 4.6).
  bool user = false;
  // EFLAGS.AC for an explicit supervisor data access; SMAP lets such an access reach user pages
  // when set (SDM 4.6.1). Must be false for implicit accesses and user accesses.
  bool eflags_ac = false;
};

// A successful translation. Rights are the combination over every level of the walk.
struct Translation {
  uint64_t physical = 0;    // the guest-physical address of `linear` itself
  uint64_t page_size = 0;   // 4 KiB, 2 MiB, 4 MiB or 1 GiB
  bool writable = false;    // R/W = 1 at every level
  bool user = false;        // U/S = 1 at every level (a "user-mode address")
  bool executable = false;  // no XD at any level (or NX not enabled)
  bool global = false;      // G on the final entry and CR4.PGE = 1
  bool dirty = false;       // D set on the final entry (after this access)
};

// The #PF to deliver: CR2 and the error code. See page_fault_error for the bits.
struct PageFault {
  uint64_t linear = 0;
  uint32_t error_code = 0;
  // A paging-structure entry was outside RAM; the fault carries P|RSVD (see above).
  bool table_outside_ram = false;
};

namespace page_fault_error {
inline constexpr uint32_t kPresent = 1u << 0;           // 0: not present; 1: protection/RSVD
inline constexpr uint32_t kWrite = 1u << 1;             // the access was a write
inline constexpr uint32_t kUser = 1u << 2;              // the access was a user-mode access
inline constexpr uint32_t kReserved = 1u << 3;          // a reserved bit was set in an entry
inline constexpr uint32_t kInstructionFetch = 1u << 4;  // fetch, when NX (PAE) or SMEP is on
}  // namespace page_fault_error

// Canonical form for 48-bit linear addresses (SDM 3.3.7.1): bits 63:47 all equal. The core
// checks it before paging (#GP, or #SS for stack references).
inline constexpr bool is_canonical(uint64_t linear) {
  uint64_t top = linear >> 47;
  return top == 0 || top == 0x1ffff;
}

enum class PagingMode : uint8_t { kNone, k32Bit, kPae, kFourLevel };

PagingMode paging_mode(const PagingRegisters& registers);
inline bool paging_enabled(const PagingRegisters& registers) {
  return paging_mode(registers) != PagingMode::kNone;
}

// Whether an access with `context` is permitted to a page with the rights of `translation`
// under CR0.WP, CR4.SMEP/SMAP (SDM 4.6). The walker uses it; the TLB uses it to fill entries
// (inline: an insert asks it for all six access kinds of one page).
inline bool access_permitted(const Translation& translation, const PagingRegisters& registers,
                             const AccessContext& context) {
  // Without paging there are no page rights; CR4.SMEP/SMAP only act once CR0.PG is set.
  if ((registers.cr0 & cr0::kPg) == 0) return true;
  // SDM 4.6.1: a supervisor data access to a user-mode address is refused under SMAP unless it
  // is explicit with EFLAGS.AC = 1.
  bool smap_blocks =
      !context.user && translation.user && (registers.cr4 & cr4::kSmap) != 0 && !context.eflags_ac;
  switch (context.type) {
    case AccessType::kRead: return context.user ? translation.user : !smap_blocks;
    case AccessType::kWrite:
      if (context.user) return translation.user && translation.writable;
      if (smap_blocks) return false;
      return translation.writable || (registers.cr0 & cr0::kWp) == 0;
    case AccessType::kExecute:
      if (!translation.executable) return false;
      if (context.user) return translation.user;
      return !(translation.user && (registers.cr4 & cr4::kSmep) != 0);
  }
  return false;
}

// The page-fault error code for `context` with the given P/RSVD bits (SDM 4.7).
uint32_t page_fault_error_code(const PagingRegisters& registers, const AccessContext& context,
                               bool present, bool reserved);

// Translates `linear`; on success sets accessed flags on every entry used and the dirty flag on
// the final entry for a write. With paging disabled the translation is the identity (truncated
// to 32 bits) with every right.
[[nodiscard]] std::expected<Translation, PageFault> walk_page_tables(
    const PagingRegisters& registers, GuestMemory& memory, uint64_t linear,
    const AccessContext& context, const PagingFeatures& features = {});

// Loads the four PAE PDPTEs from the table at CR3[31:5] as MOV to CR3 (or to CR0/CR4 entering
// PAE paging) does. nullopt means #GP(0): a present PDPTE with reserved bits set, or the table
// not in RAM (SDM 4.4.1).
[[nodiscard]] std::optional<std::array<uint64_t, 4>> load_pae_pdptes(
    const PagingRegisters& registers, const GuestMemory& memory,
    const PagingFeatures& features = {});

}  // namespace lamina::cpu::x86
