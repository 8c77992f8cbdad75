#include "cpu/x86/system/page_walker.h"

#include <algorithm>
#include <atomic>

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {

namespace {

// Paging-structure entry bits common to all modes (SDM 4.3, 4.4, 4.5 tables).
constexpr uint64_t kEntryPresent = uint64_t{1} << 0;
constexpr uint64_t kEntryWritable = uint64_t{1} << 1;
constexpr uint64_t kEntryUser = uint64_t{1} << 2;
constexpr uint64_t kEntryAccessed = uint64_t{1} << 5;
constexpr uint64_t kEntryDirty = uint64_t{1} << 6;
constexpr uint64_t kEntryPageSize = uint64_t{1} << 7;
constexpr uint64_t kEntryGlobal = uint64_t{1} << 8;
constexpr uint64_t kEntryExecuteDisable = uint64_t{1} << 63;

constexpr uint64_t kKiB4 = uint64_t{1} << 12;
constexpr uint64_t kMiB2 = uint64_t{1} << 21;
constexpr uint64_t kMiB4 = uint64_t{1} << 22;
constexpr uint64_t kGiB1 = uint64_t{1} << 30;

// Bits lo..hi inclusive.
constexpr uint64_t bit_range(unsigned low, unsigned high) {
  return ((high >= 63) ? ~uint64_t{0} : ((uint64_t{1} << (high + 1)) - 1)) &
         ~((uint64_t{1} << low) - 1);
}

// A lost compare-exchange race restarts the walk at most this often; then the flags are set with
// an atomic OR so a guest hammering its own tables cannot hang the vCPU.
constexpr int kMaxWalkRestarts = 16;

struct UsedEntry {
  std::byte* host = nullptr;
  uint64_t physical = 0;  // for the dirty log when accessed/dirty bits are set
  uint64_t value = 0;
  bool wide = false;  // 8-byte entry (PAE, 4-level) or 4-byte (32-bit paging)
};

uint64_t load_entry(std::byte* host, bool wide) {
  if (wide) return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(host)).load();
  return std::atomic_ref<uint32_t>(*reinterpret_cast<uint32_t*>(host)).load();
}

// Sets `bits` in the entry if it still holds the value the walk used. False: it changed.
bool set_entry_bits(const UsedEntry& entry, uint64_t bits, bool force) {
  if (entry.wide) {
    std::atomic_ref<uint64_t> ref(*reinterpret_cast<uint64_t*>(entry.host));
    if (force) {
      ref.fetch_or(bits);
      return true;
    }
    uint64_t expected = entry.value;
    return ref.compare_exchange_strong(expected, entry.value | bits);
  }
  std::atomic_ref<uint32_t> ref(*reinterpret_cast<uint32_t*>(entry.host));
  if (force) {
    ref.fetch_or(static_cast<uint32_t>(bits));
    return true;
  }
  uint32_t expected = static_cast<uint32_t>(entry.value);
  return ref.compare_exchange_strong(expected, static_cast<uint32_t>(entry.value | bits));
}

// One pass over the tables for one linear address.
class Walker {
 public:
  Walker(const PagingRegisters& registers, GuestMemory& memory, uint64_t linear,
         const AccessContext& context, const PagingFeatures& features)
      : registers_(registers), memory_(memory), linear_(linear), context_(context) {
    unsigned bits = std::clamp<unsigned>(features.physical_address_bits, 32, 52);
    physical_mask_ = bit_range(0, bits - 1);
    frame_mask_ = physical_mask_ & ~(kKiB4 - 1);
    features_ = features;
    features_.physical_address_bits = static_cast<uint8_t>(bits);
    nx_enabled_ = (registers.efer & efer::kNxe) != 0;
    // XD is a reserved bit when NX is off (SDM Table 4-11 and following).
    execute_disable_reserved_ = nx_enabled_ ? 0 : kEntryExecuteDisable;
  }

  std::expected<Translation, PageFault> walk(PagingMode mode) {
    switch (mode) {
      case PagingMode::k32Bit: return walk_32bit();
      case PagingMode::kPae: return walk_pae();
      case PagingMode::kFourLevel: return walk_four_level();
      case PagingMode::kNone: break;
    }
    return std::unexpected(fault(false, false));
  }

  // Sets accessed flags on every used entry and dirty on the final one for a write.
  bool commit_flags(bool force) {
    for (int i = 0; i < used_count_; ++i) {
      uint64_t bits = kEntryAccessed;
      if (i == used_count_ - 1 && context_.type == AccessType::kWrite) bits |= kEntryDirty;
      // Flags already set: the entry is not written, so neither is the dirty log marked.
      if ((used_[i].value & bits) == bits) continue;
      if (!set_entry_bits(used_[i], bits, force)) return false;
      memory_.note_written(used_[i].physical, used_[i].wide ? 8 : 4);
    }
    return true;
  }

 private:
  PageFault fault(bool present, bool reserved, bool outside_ram = false) const {
    return PageFault{linear_, page_fault_error_code(registers_, context_, present, reserved),
                     outside_ram};
  }

  // Reads the entry at `address` and records it as used by the walk.
  std::expected<uint64_t, PageFault> read_entry(uint64_t address, bool wide) {
    const uint64_t physical = address & registers_.a20_mask;
    std::byte* host = memory_.host_pointer(physical, wide ? 8 : 4);
    if (host == nullptr) return std::unexpected(fault(true, true, true));
    uint64_t value = load_entry(host, wide);
    used_[used_count_++] = UsedEntry{host, physical, value, wide};
    return value;
  }

  void combine_rights(uint64_t entry) {
    writable_ = writable_ && (entry & kEntryWritable) != 0;
    user_ = user_ && (entry & kEntryUser) != 0;
    if (nx_enabled_ && (entry & kEntryExecuteDisable) != 0) executable_ = false;
  }

  std::expected<Translation, PageFault> finish(uint64_t entry, uint64_t page_base,
                                               uint64_t page_size, uint64_t linear) {
    Translation translation;
    translation.physical = page_base | (linear & (page_size - 1));
    translation.page_size = page_size;
    translation.writable = writable_;
    translation.user = user_;
    translation.executable = executable_;
    translation.global = (entry & kEntryGlobal) != 0 && (registers_.cr4 & cr4::kPge) != 0;
    translation.dirty = (entry & kEntryDirty) != 0 || context_.type == AccessType::kWrite;
    if (!access_permitted(translation, registers_, context_)) {
      return std::unexpected(fault(true, false));
    }
    return translation;
  }

  // 32-bit paging, SDM 4.3: CR3[31:12] -> PD -> (4 MiB page | PT -> 4 KiB page).
  std::expected<Translation, PageFault> walk_32bit() {
    uint32_t linear = static_cast<uint32_t>(linear_);
    uint64_t directory = registers_.cr3 & 0xfffff000u;
    auto pde = read_entry(directory + ((linear >> 22) << 2), false);
    if (!pde) return std::unexpected(pde.error());
    if ((*pde & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    combine_rights(*pde);
    if ((registers_.cr4 & cr4::kPse) != 0 && (*pde & kEntryPageSize) != 0) {
      // SDM Table 4-4: PDE bits 20:13 hold physical bits 39:32 (PSE-36, here up to MAXPHYADDR);
      // bit 21 and the unused high-address bits are reserved.
      unsigned address_bits = std::min<unsigned>(features_.physical_address_bits, 40);
      unsigned high_bits = features_.pse36 ? address_bits - 32 : 0;
      uint64_t reserved = bit_range(13 + high_bits, 21);
      if ((*pde & reserved) != 0) return std::unexpected(fault(true, true));
      uint64_t high = (*pde >> 13) & bit_range(0, 7);
      uint64_t base = (*pde & 0xffc00000u) | (high << 32);
      return finish(*pde, base, kMiB4, linear);
    }
    auto pte = read_entry((*pde & 0xfffff000u) + (((linear >> 12) & 0x3ff) << 2), false);
    if (!pte) return std::unexpected(pte.error());
    if ((*pte & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    combine_rights(*pte);
    return finish(*pte, *pte & 0xfffff000u, kKiB4, linear);
  }

  // PAE paging, SDM 4.4: PDPTE registers -> PD -> (2 MiB page | PT -> 4 KiB page).
  std::expected<Translation, PageFault> walk_pae() {
    uint32_t linear = static_cast<uint32_t>(linear_);
    unsigned index = linear >> 30;
    uint64_t pdpte = 0;
    if (registers_.pae_pdptes_loaded) {
      pdpte = registers_.pae_pdptes[index];
    } else {
      // Read at walk time; PAE PDPTEs have no accessed flag, so this entry is not recorded.
      std::byte* host = memory_.host_pointer(
          ((registers_.cr3 & 0xffffffe0u) + index * 8) & registers_.a20_mask, 8);
      if (host == nullptr) return std::unexpected(fault(true, true, true));
      pdpte = load_entry(host, true);
    }
    if ((pdpte & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    if ((pdpte & pae_pdpte_reserved()) != 0) return std::unexpected(fault(true, true));
    uint64_t high_reserved = bit_range(features_.physical_address_bits, 62);
    return walk_directory(pdpte & frame_mask_, high_reserved, linear);
  }

  // 4-level paging, SDM 4.5: CR3 -> PML4 -> PDPT -> (1 GiB | PD -> (2 MiB | PT -> 4 KiB)).
  std::expected<Translation, PageFault> walk_four_level() {
    uint64_t high_reserved = bit_range(features_.physical_address_bits, 51);
    auto pml4e = read_entry((registers_.cr3 & frame_mask_) + ((linear_ >> 39) & 0x1ff) * 8, true);
    if (!pml4e) return std::unexpected(pml4e.error());
    if ((*pml4e & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    // PML4E bit 7 (PS) is reserved (SDM Table 4-15).
    if ((*pml4e & (high_reserved | kEntryPageSize | execute_disable_reserved_)) != 0) {
      return std::unexpected(fault(true, true));
    }
    combine_rights(*pml4e);
    auto pdpte = read_entry((*pml4e & frame_mask_) + ((linear_ >> 30) & 0x1ff) * 8, true);
    if (!pdpte) return std::unexpected(pdpte.error());
    if ((*pdpte & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    uint64_t reserved = high_reserved | execute_disable_reserved_;
    bool large = (*pdpte & kEntryPageSize) != 0;
    // Without 1 GiB page support PS is reserved here; with it, bits 29:13 are (Table 4-16).
    if (large) reserved |= features_.gigabyte_pages ? bit_range(13, 29) : kEntryPageSize;
    if ((*pdpte & reserved) != 0) return std::unexpected(fault(true, true));
    combine_rights(*pdpte);
    if (large) return finish(*pdpte, *pdpte & physical_mask_ & ~(kGiB1 - 1), kGiB1, linear_);
    return walk_directory(*pdpte & frame_mask_, high_reserved, linear_);
  }

  // The page directory and page table levels shared by PAE and 4-level paging.
  std::expected<Translation, PageFault> walk_directory(uint64_t directory, uint64_t high_reserved,
                                                       uint64_t linear) {
    auto pde = read_entry(directory + ((linear >> 21) & 0x1ff) * 8, true);
    if (!pde) return std::unexpected(pde.error());
    if ((*pde & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    uint64_t reserved = high_reserved | execute_disable_reserved_;
    bool large = (*pde & kEntryPageSize) != 0;
    if (large) reserved |= bit_range(13, 20);
    if ((*pde & reserved) != 0) return std::unexpected(fault(true, true));
    combine_rights(*pde);
    if (large) return finish(*pde, *pde & physical_mask_ & ~(kMiB2 - 1), kMiB2, linear);
    auto pte = read_entry((*pde & frame_mask_) + ((linear >> 12) & 0x1ff) * 8, true);
    if (!pte) return std::unexpected(pte.error());
    if ((*pte & kEntryPresent) == 0) return std::unexpected(fault(false, false));
    if ((*pte & (high_reserved | execute_disable_reserved_)) != 0) {
      return std::unexpected(fault(true, true));
    }
    combine_rights(*pte);
    return finish(*pte, *pte & frame_mask_, kKiB4, linear);
  }

  uint64_t pae_pdpte_reserved() const {
    // SDM Table 4-8: bits 2:1, 8:5 and 63:MAXPHYADDR are reserved.
    return bit_range(1, 2) | bit_range(5, 8) | bit_range(features_.physical_address_bits, 63);
  }

  const PagingRegisters& registers_;
  GuestMemory& memory_;
  uint64_t linear_;
  AccessContext context_;
  PagingFeatures features_;
  uint64_t physical_mask_ = 0;
  uint64_t frame_mask_ = 0;
  bool nx_enabled_ = false;
  uint64_t execute_disable_reserved_ = 0;
  std::array<UsedEntry, 4> used_{};
  int used_count_ = 0;
  bool writable_ = true;
  bool user_ = true;
  bool executable_ = true;
};

}  // namespace

PagingMode paging_mode(const PagingRegisters& registers) {
  if ((registers.cr0 & cr0::kPg) == 0) return PagingMode::kNone;
  if ((registers.cr4 & cr4::kPae) == 0) return PagingMode::k32Bit;
  if ((registers.efer & efer::kLma) != 0) return PagingMode::kFourLevel;
  return PagingMode::kPae;
}

uint32_t page_fault_error_code(const PagingRegisters& registers, const AccessContext& context,
                               bool present, bool reserved) {
  uint32_t code = 0;
  if (present) code |= page_fault_error::kPresent;
  if (reserved) code |= page_fault_error::kReserved;
  if (context.type == AccessType::kWrite) code |= page_fault_error::kWrite;
  if (context.user) code |= page_fault_error::kUser;
  // SDM 4.7: I/D is reported for fetches only with SMEP, or with PAE/4-level paging and NXE.
  bool nx_paging = (registers.cr4 & cr4::kPae) != 0 && (registers.efer & efer::kNxe) != 0;
  if (context.type == AccessType::kExecute && ((registers.cr4 & cr4::kSmep) != 0 || nx_paging)) {
    code |= page_fault_error::kInstructionFetch;
  }
  return code;
}

std::expected<Translation, PageFault> walk_page_tables(const PagingRegisters& registers,
                                                       GuestMemory& memory, uint64_t linear,
                                                       const AccessContext& context,
                                                       const PagingFeatures& features) {
  PagingMode mode = paging_mode(registers);
  // Outside 4-level paging linear addresses are 32 bits: the address space wraps (and CR2
  // receives the truncated address).
  if (mode != PagingMode::kFourLevel) linear &= 0xffffffffu;
  if (mode == PagingMode::kNone) {
    // Without paging, linear and physical addresses are the same.
    return Translation{linear, kKiB4, true, true, true, false, true};
  }
  for (int attempt = 0;; ++attempt) {
    Walker walker(registers, memory, linear, context, features);
    auto result = walker.walk(mode);
    if (!result) return result;
    if (walker.commit_flags(attempt >= kMaxWalkRestarts)) return result;
  }
}

std::optional<std::array<uint64_t, 4>> load_pae_pdptes(const PagingRegisters& registers,
                                                       const GuestMemory& memory,
                                                       const PagingFeatures& features) {
  unsigned bits = std::clamp<unsigned>(features.physical_address_bits, 32, 52);
  uint64_t reserved = bit_range(1, 2) | bit_range(5, 8) | bit_range(bits, 63);
  std::byte* host = memory.host_pointer(registers.cr3 & 0xffffffe0u & registers.a20_mask, 32);
  if (host == nullptr) return std::nullopt;
  std::array<uint64_t, 4> pdptes{};
  for (unsigned i = 0; i < 4; ++i) {
    pdptes[i] = load_entry(host + i * 8, true);
    if ((pdptes[i] & kEntryPresent) != 0 && (pdptes[i] & reserved) != 0) return std::nullopt;
  }
  return pdptes;
}

}  // namespace lamina::cpu::x86
