#pragma once
// MsixCapability: the MSI-X capability of a PCI function (PCI Local Bus 3.0 section 6.8.2):
// the capability structure in config space (table size, function mask, enable; table and PBA
// locations), the vector table (address, data, per-vector mask) and the pending bit array in a
// BAR. A device signals a vector with notify(); the message goes to the MsiSink (the ApicBus)
// unless the vector or the function is masked, in which case the pending bit is set and the
// message is sent when it is unmasked.
//
// The object is the Device for the BAR range holding the table and PBA (offsets relative to
// the BAR start), so a device can give MSI-X a BAR of its own or forward part of a shared BAR.
//
// Ownership: borrows the PCI function and the sink. Thread-safety: one mutex over table and
// PBA; messages are sent after it is released. It reads the function's config space, never
// the other way round, so the two locks cannot deadlock.

#include <cstdint>
#include <mutex>
#include <vector>

#include "hw/apic_bus.h"
#include "hw/device.h"
#include "hw/pci_device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class MsixCapability final : public Device, public Stateful {
 public:
  static constexpr uint16_t kMaxVectors = 2048;

  // Adds the capability to `function`. table_offset and pba_offset are byte offsets within BAR
  // `bar` (8-byte aligned); the caller sizes that BAR to hold both.
  MsixCapability(PciDevice& function, MsiSink& sink, uint16_t vectors, uint8_t bar,
                 uint32_t table_offset, uint32_t pba_offset);

  std::string_view name() const override { return "msix"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  // Signals a vector. Returns false when MSI-X is disabled (the device should use INTx).
  bool notify(uint16_t vector);
  bool enabled() const;
  uint16_t vectors() const { return vectors_; }
  uint8_t capability_offset() const { return capability_; }
  // Bytes the table and PBA occupy from table_offset and pba_offset.
  uint32_t table_size() const { return vectors_ * 16u; }
  uint32_t pba_size() const { return ((vectors_ + 63u) / 64u) * 8u; }

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Entry {
    uint32_t address_low = 0;
    uint32_t address_high = 0;
    uint32_t data = 0;
    uint32_t control = 1;  // masked at reset
  };
  struct Message {
    uint64_t address;
    uint32_t data;
  };
  // Message Control: enable (bit 15) and function mask (bit 14).
  uint16_t message_control() const;
  // Sends every pending vector that is no longer masked.
  void flush_pending(uint16_t control);
  void send(const std::vector<Message>& messages);

  PciDevice& function_;
  MsiSink& sink_;
  const uint16_t vectors_;
  const uint32_t table_offset_;
  const uint32_t pba_offset_;
  uint8_t capability_ = 0;

  mutable std::mutex mutex_;
  std::vector<Entry> table_;
  std::vector<uint64_t> pending_;
};

}  // namespace lamina::hw
