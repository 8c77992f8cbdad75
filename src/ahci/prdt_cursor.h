#pragma once
// PrdtCursor: the data region of one AHCI command, its Physical Region Descriptor Table (AHCI
// 1.3 section 4.2.3.3), read and written front to back as a device moves the command's data.
// Every entry is read from guest RAM when the transfer reaches it, so a table of 65535 entries
// costs only the entries a transfer uses; every data address is checked against guest RAM
// (DmaMemory) before a byte moves. A transfer past the table's end or outside RAM fails, with
// what already moved counted in transferred().
//
// Ownership: borrows the DmaMemory. Thread-safety: one thread at a time.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "base/dma_memory.h"
#include "base/error.h"

namespace lamina::ahci {

class PrdtCursor {
 public:
  static constexpr uint64_t kEntrySize = 16;
  // Byte counts are 22 bits, minus one (section 4.2.3.3, DBC).
  static constexpr uint64_t kMaxEntryBytes = uint64_t{1} << 22;

  PrdtCursor(const DmaMemory& memory, uint64_t table, uint32_t entries)
      : memory_(memory), table_(table), entries_(entries) {}

  // Copies `data` into the regions' next bytes.
  [[nodiscard]] Result<void> to_guest(std::span<const std::byte> data);
  // Fills `data` from the regions' next bytes.
  [[nodiscard]] Result<void> from_guest(std::span<std::byte> data);

  uint64_t transferred() const { return transferred_; }
  uint32_t entries() const { return entries_; }

 private:
  // Loads the next entry when the current one is used up; false at the table's end.
  [[nodiscard]] Result<bool> advance();
  // Moves the cursor over `total` bytes, one region piece at a time: `copy` gets the piece's
  // guest address, the bytes done before it and its length, and says false when the piece is
  // not in guest RAM.
  [[nodiscard]] Result<void> walk(uint64_t total,
                                  const std::function<bool(uint64_t address, uint64_t done, uint64_t length)>& copy);

  const DmaMemory& memory_;
  uint64_t table_;
  uint32_t entries_;
  uint32_t next_entry_ = 0;
  uint64_t region_address_ = 0;
  uint64_t region_left_ = 0;
  uint64_t transferred_ = 0;
};

}  // namespace lamina::ahci
