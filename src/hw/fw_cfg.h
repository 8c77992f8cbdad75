#pragma once
// FwCfg: QEMU's firmware configuration interface (QEMU docs/specs/fw_cfg.rst), the channel
// through which SeaBIOS (and later OVMF) learns the machine: a 16-bit selector register, a
// byte-wide data register that streams the selected item, and the DMA interface, whose
// big-endian descriptor address register makes the device copy items into guest RAM. Items
// are keyed blobs; named files get keys from kFirstFileKey on and are listed in the file
// directory (key kFileDirectory). Every item is read-only: DMA writes report an error.
//
// x86 port layout (one Device mapped at kPortBase, kPortSize bytes): offset 0 the selector
// (16-bit writes), offset 1 the data register, offsets 4-11 the DMA address (a 32-bit write
// at 4 sets the high half, one at 8 sets the low half and starts the transfer, a 64-bit write
// at 4 does both; reads give the "QEMU CFG" signature).
//
// Ownership: owns the items; borrows the DmaMemory. Thread-safety: items are added before the
// guest runs (add_item/add_file are not safe against concurrent guest accesses); read() and
// write() may come from any vCPU thread and are serialised by one mutex.

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/dma_memory.h"
#include "base/error.h"
#include "base/log.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

namespace fw_cfg {
// Selector keys (fw_cfg.rst, "Selector Register"; the x86 ones from QEMU's fw_cfg.h).
inline constexpr uint16_t kSignature = 0x0000;
inline constexpr uint16_t kId = 0x0001;
inline constexpr uint16_t kUuid = 0x0002;
inline constexpr uint16_t kRamSize = 0x0003;
inline constexpr uint16_t kNoGraphic = 0x0004;
inline constexpr uint16_t kCpuCount = 0x0005;  // FW_CFG_NB_CPUS: CPUs present at boot
inline constexpr uint16_t kBootMenu = 0x000e;
inline constexpr uint16_t kMaxCpus = 0x000f;
inline constexpr uint16_t kFileDirectory = 0x0019;
inline constexpr uint16_t kFirstFileKey = 0x0020;
// The write channel bit of the legacy interface; it selects nothing and is ignored.
inline constexpr uint16_t kWriteChannel = 0x4000;
inline constexpr uint16_t kArchLocal = 0x8000;
inline constexpr uint16_t kX86E820Table = kArchLocal + 3;

// fw_cfg.rst, "Directory": a big-endian count, then per file size, select, reserved, name.
inline constexpr size_t kFileNameSize = 56;
inline constexpr size_t kDirectoryEntrySize = 64;

// fw_cfg.rst, "DMA interface": FWCfgDmaAccess {be32 control; be32 length; be64 address}.
inline constexpr size_t kDmaDescriptorSize = 16;
inline constexpr uint32_t kDmaError = 1u << 0;
inline constexpr uint32_t kDmaRead = 1u << 1;
inline constexpr uint32_t kDmaSkip = 1u << 2;
inline constexpr uint32_t kDmaSelect = 1u << 3;
inline constexpr uint32_t kDmaWrite = 1u << 4;
// The ID item's feature bits.
inline constexpr uint32_t kFeatureTraditional = 1u << 0;
inline constexpr uint32_t kFeatureDma = 1u << 1;
// What a read of the DMA address register gives: "QEMU CFG" as a big-endian 64-bit value.
inline constexpr uint64_t kDmaSignature = 0x51454d5520434647;
}  // namespace fw_cfg

class FwCfg final : public Device, public Stateful {
 public:
  static constexpr uint64_t kPortBase = 0x510;
  static constexpr uint64_t kPortSize = 12;
  // One DMA transfer moves at most this much (reads past an item's end fill zeros, so a guest
  // length is otherwise unbounded work on a vCPU thread); larger requests end in kDmaError.
  static constexpr uint32_t kMaxDmaLength = 64u << 20;
  static constexpr size_t kMaxFiles = 1024;

  explicit FwCfg(DmaMemory& memory);

  std::string_view name() const override { return "fw_cfg"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  // A keyed item (replacing one of that key). kInvalidArgument for the directory's key, file
  // keys (use add_file) and the signature/ID keys, which the device owns.
  [[nodiscard]] Result<void> add_item(uint16_t key, std::vector<std::byte> data);
  // A named file; returns its key. kInvalidArgument for an empty, too long or repeated name,
  // or past kMaxFiles.
  [[nodiscard]] Result<uint16_t> add_file(std::string_view name, std::vector<std::byte> data);

  // The current item's bytes (tests and tools); empty when the key holds nothing.
  std::vector<std::byte> item(uint16_t key) const;

  // The selector and offset (the items are rebuilt by the machine on restore).
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  const std::vector<std::byte>* selected_locked() const;
  void select_locked(uint16_t key);
  void start_dma_locked(uint64_t descriptor_address);
  // Returns the control word to write back (0 or kDmaError).
  uint32_t transfer_locked(uint32_t control, uint32_t length, uint64_t address);
  void rebuild_directory();

  DmaMemory& memory_;
  RateLimiter log_limiter_;
  std::map<uint16_t, std::vector<std::byte>> items_;
  std::vector<std::string> file_names_;  // index i has key kFirstFileKey + i

  mutable std::mutex mutex_;
  uint16_t selector_ = 0;
  uint32_t offset_ = 0;
  uint32_t dma_address_high_ = 0;
};

}  // namespace lamina::hw
