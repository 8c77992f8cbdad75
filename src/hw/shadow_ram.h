#pragma once
// ShadowRam: the BIOS area 0xC0000-0xFFFFF as the i440FX's PAM registers present it (Intel
// 82441FX datasheet, section 3.2.18, "PAM"): per segment, reads come from DRAM or from the
// PCI/ROM side, and writes go to DRAM or are dropped. Segment 0 is 0xF0000-0xFFFFF (64 KiB),
// segments 1-12 are the 16 KiB pieces of 0xC0000-0xEFFFF. On the ROM side 0xE0000-0xFFFFF
// reads the system BIOS's last 128 KiB (the PC's legacy BIOS alias) and 0xC0000-0xDFFFF reads
// all ones (no legacy device decodes it).
//
// How it is built: the area is guest RAM whose bytes are always what a read sees; DRAM's own
// bytes wait here while ROM is shown. Pages whose writes must not land in RAM are write-
// protected in GuestMemory, so vCPU writes reach this Device on the MMIO bus: kept in DRAM's
// copy for "write-only" segments, dropped otherwise.
//
// Ownership: borrows the DmaMemory (changes are reported like a device's DMA, so vCPUs drop
// code they decoded there); owns a copy of the ROM. Thread-safety: set_access() comes from the
// host bridge's config writes and write() from any vCPU, serialised by one mutex;
// protection_changed runs under it and must only post requests (flush cached write
// translations).

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "base/dma_memory.h"
#include "base/log.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class ShadowRam final : public Device, public Stateful {
 public:
  static constexpr uint64_t kBase = 0xc0000;
  static constexpr uint64_t kSize = 0x40000;
  static constexpr unsigned kSegments = 13;

  struct Access {
    bool read_dram = false;
    bool write_dram = false;
    bool operator==(const Access&) const = default;
  };

  // rom: the system BIOS image; its last 128 KiB (or all of a smaller one) shows at the top of
  // the area. Starts with every segment on the ROM side (PAM registers 0, as after reset).
  ShadowRam(DmaMemory& memory, std::span<const std::byte> rom,
            std::function<void()> protection_changed);

  std::string_view name() const override { return "shadow-ram"; }
  // Reads only arrive here for pages outside RAM (never); they give the current view.
  void read(uint64_t offset, std::span<std::byte> data) override;
  // A vCPU write to a write-protected page.
  void write(uint64_t offset, std::span<const std::byte> data) override;

  void set_access(unsigned segment, Access access);
  Access access(unsigned segment) const;

  // Segment ranges (segment 0: 0xF0000 + 64 KiB, segment n: 0xC0000 + (n - 1) * 16 KiB).
  static uint64_t segment_base(unsigned segment);
  static uint64_t segment_size(unsigned segment);

  // DRAM's hidden bytes and each segment's access; the RAM itself travels with guest memory.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  void apply_locked(unsigned segment, Access before, Access after);
  void protect_locked(unsigned segment);

  DmaMemory& memory_;
  std::vector<std::byte> rom_view_;  // what the ROM side reads, kSize bytes
  std::function<void()> protection_changed_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::vector<std::byte> dram_;  // DRAM's bytes, valid for segments reading the ROM side
  std::array<Access, kSegments> access_{};
};

}  // namespace lamina::hw
