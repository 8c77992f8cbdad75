#pragma once
// GuestMemory: the guest's RAM, as regions of guest-physical address space each backed by an
// anonymous host mapping. Every guest-supplied address goes through host_pointer(), read() or
// write(), which check the whole range against RAM before any host pointer is formed.
//
// Ownership: owns the mappings (RAII). Thread-safety: the layout is fixed at construction and
// may be queried from any thread; the content is shared by all vCPUs and devices, like real RAM.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/dirty_log.h"
#include "base/error.h"

namespace lamina {

struct RamRegion {
  uint64_t guest_physical;  // first byte, page-aligned
  uint64_t size;            // bytes, page-aligned, non-zero
};

class GuestMemory {
 public:
  // Maps each region; fails on overlap, misalignment, zero size or a refused mapping.
  static Result<GuestMemory> create(std::vector<RamRegion> regions);

  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&& other) noexcept;
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;
  ~GuestMemory();

  // Host pointer to [guest_physical, guest_physical + length) when the range lies entirely in
  // one RAM region, else nullptr (MMIO, holes, or a range running past the end).
  // Inline: every page walk asks it once per level.
  std::byte* host_pointer(uint64_t guest_physical, uint64_t length) const {
    for (const Mapping& mapping : mappings_) {
      const RamRegion& region = mapping.region;
      if (guest_physical < region.guest_physical) continue;
      const uint64_t offset = guest_physical - region.guest_physical;
      // Written as subtractions so a huge guest value cannot wrap the comparison.
      if (offset >= region.size || length > region.size - offset) continue;
      return mapping.host + offset;
    }
    return nullptr;
  }
  bool contains(uint64_t guest_physical, uint64_t length) const {
    return host_pointer(guest_physical, length) != nullptr;
  }

  // Checked copies; kInvalidArgument names the range when any byte is outside RAM.
  [[nodiscard]] Result<void> read(uint64_t guest_physical, std::span<std::byte> data) const;
  [[nodiscard]] Result<void> write(uint64_t guest_physical, std::span<const std::byte> data);

  // Replaces region `index`'s contents with a private copy-on-write mapping of `fd` from
  // `file_offset` (page-aligned; the file must hold the whole region): pages are read from the
  // file when the guest first touches them, and writes never reach the file. The host address
  // stays the same. For restoring a saved machine's RAM lazily; only while nothing else
  // touches the region.
  [[nodiscard]] Result<void> map_file(size_t index, int fd, uint64_t file_offset);

  // Which pages were written while logging (live migration; base/dirty_log.h). Writers of
  // guest RAM other than write() (vCPUs, device DMA) call note_written() after each write.
  DirtyLog& dirty_log() { return *dirty_; }
  void note_written(uint64_t guest_physical, uint64_t length) {
    if (dirty_) dirty_->mark(guest_physical, length);
  }

  // Shadow RAM below 1 MiB that the chipset made read-only (hw/shadow_ram.h, i440FX PAM):
  // vCPUs send their writes to such pages down the MMIO path instead of into RAM. Device DMA
  // and write() are not affected (as on a PC, where PAM filters CPU cycles). Any thread; the
  // caller flushes the vCPUs' cached write translations after a change.
  static constexpr uint64_t kProtectableEnd = uint64_t{1} << 20;
  void set_write_protected(uint64_t guest_physical, uint64_t length, bool on);
  bool write_protected(uint64_t page) const {
    if (page >= kProtectableEnd) return false;
    const uint64_t index = page >> 12;
    return ((*write_protected_)[index / 64].load(std::memory_order_relaxed) >> (index % 64)) & 1;
  }

  const std::vector<RamRegion>& regions() const { return regions_; }
  uint64_t total_size() const;

 private:
  struct Mapping {
    RamRegion region;
    std::byte* host;
  };
  GuestMemory() = default;
  void unmap_all();

  std::vector<RamRegion> regions_;
  std::vector<Mapping> mappings_;
  std::unique_ptr<DirtyLog> dirty_;  // on the heap: vCPUs keep its address across moves
  // One bit per page below kProtectableEnd; on the heap for the same reason.
  using ProtectionBits = std::array<std::atomic<uint64_t>, kProtectableEnd / 4096 / 64>;
  std::unique_ptr<ProtectionBits> write_protected_ = std::make_unique<ProtectionBits>();
};

}  // namespace lamina
