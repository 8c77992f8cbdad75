#pragma once
// IoApic: the 82093AA-style I/O APIC at MMIO 0xfec00000 (Intel 82093AA data sheet, order
// 290566): IOREGSEL at 0x00, IOWIN at 0x10, and the version 0x20 EOI register at 0x40; ID,
// version and arbitration registers and 24 redirection entries (vector, delivery mode,
// destination mode and destination, trigger mode, mask; Remote IRR for level-triggered pins).
// Messages go to the local APICs through an InterruptRouter (the ApicBus); EOIs for
// level-triggered vectors come back through EoiListener.
//
// Input lines carry the logical assertion of each interrupt (a device says "asserted", not
// "pin at 0 V"): the polarity bit is stored for the guest to read back but not applied, so a
// machine may describe PCI INTx as active-low in ACPI without devices inverting anything.
//
// Ownership: borrows the router; owns its 24 input lines. Thread-safety: one mutex, held while
// delivering (the router locks local APICs, which never call back into the IOAPIC while locked).

#include <array>
#include <cstdint>
#include <mutex>

#include "base/log.h"
#include "hw/apic_bus.h"
#include "hw/device.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"

namespace lamina::hw {

class IoApic final : public Device, public Stateful, public EoiListener {
 public:
  static constexpr unsigned kPins = 24;
  static constexpr uint64_t kDefaultBase = 0xfec00000;
  static constexpr uint64_t kSize = 0x1000;

  IoApic(uint8_t id, InterruptRouter& router);

  IrqLine& input(unsigned pin) { return inputs_[pin % kPins]; }
  void set_irq(unsigned pin, bool level);

  std::string_view name() const override { return "ioapic"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  void end_of_interrupt(uint8_t vector) override;

  // The redirection entry of a pin, for tests and diagnostics.
  uint64_t redirection(unsigned pin) const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  class Input final : public IrqLine {
   public:
    void set_level(bool asserted) override { ioapic_->set_irq(pin_, asserted); }
    IoApic* ioapic_ = nullptr;
    unsigned pin_ = 0;
  };
  uint32_t read_register(uint8_t index) const;
  void write_register(uint8_t index, uint32_t value);
  // Delivers a level-triggered pin that is asserted, unmasked and not awaiting EOI.
  void service_level(unsigned pin);
  void deliver(unsigned pin);

  InterruptRouter& router_;
  std::array<Input, kPins> inputs_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  uint8_t id_;
  uint8_t select_ = 0;
  std::array<uint64_t, kPins> entries_{};
  uint32_t levels_ = 0;  // asserted inputs, bit per pin
};

}  // namespace lamina::hw
