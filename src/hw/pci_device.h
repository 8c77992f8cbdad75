#pragma once
// PciDevice: the configuration space of one PCI function with a type 0 (endpoint) header (PCI
// Local Bus 3.0, chapter 6; PCIe 5.0 section 7.5.1): identity, Command/Status, BARs with size
// probing, the capability list, interrupt line/pin and INTx, and 4 KiB of space for ECAM. A
// device model (virtio-*, the host bridge's own function) derives from it, declares its BARs and
// capabilities at construction and reacts to config writes through config_written().
//
// Command register decoding drives the buses: while I/O or memory decode is on and a BAR holds a
// usable address, the BAR's region Device is mapped there on the PCI host's port or MMIO bus;
// turning decode off, moving the BAR, or sizing it unmaps it. A mapping that would overlap
// another device is refused and logged, and the BAR stays unmapped.
//
// Config accesses are byte-granular against per-byte masks (writable, write-1-to-clear), so any
// size and alignment a guest uses behaves like the hardware register would.
//
// Ownership: borrows region Devices, buses and the INTx line; they outlive it. Thread-safety:
// one mutex over config space; bus (un)mapping happens with it held (the bus never calls back
// into a device under its own lock); config_written() hooks and listeners run after it is released.

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/log.h"
#include "hw/bus.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"

namespace lamina::hw {

enum class PciBarKind : uint8_t { kIo, kMemory32, kMemory64 };

class PciDevice : public Stateful {
 public:
  static constexpr size_t kConfigSize = 4096;
  static constexpr unsigned kBars = 6;

  // class_code: base class << 16 | subclass << 8 | programming interface.
  PciDevice(std::string name, uint16_t vendor, uint16_t device, uint32_t class_code,
            uint8_t revision = 0);
  ~PciDevice() override;
  PciDevice(const PciDevice&) = delete;
  PciDevice& operator=(const PciDevice&) = delete;

  const std::string& name() const { return name_; }

  // Config space access by the host bridge: offset < 4096, size 1, 2 or 4.
  uint32_t config_read(uint16_t offset, unsigned size) const;
  void config_write(uint16_t offset, unsigned size, uint32_t value);

  // Called by the PCI host when the function is plugged in.
  void attach_buses(Bus& io, Bus& mmio);

  // Raises or lowers INTx; honours Command.InterruptDisable and reports Status.InterruptStatus.
  void set_intx(bool level);
  // The machine's routing of this function's INTx pin (swizzled to a PIC/IOAPIC input).
  void set_intx_line(IrqLine* line);
  IrqLine* intx_line() const { return intx_line_; }

  // Called after each config write, outside the lock (MSI-X watches its Message Control).
  void add_config_listener(std::function<void(uint16_t offset, unsigned size)> listener);

  // The address a BAR is currently mapped at, if decoding.
  std::optional<uint64_t> bar_mapping(unsigned index) const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 protected:
  // Construction-time layout. size is a power of two (>= 16 for memory, >= 4 for I/O).
  void add_bar(unsigned index, PciBarKind kind, uint64_t size, Device& region,
               bool prefetchable = false);
  void set_subsystem(uint16_t vendor, uint16_t id);
  // INTA=1 .. INTD=4.
  void set_interrupt_pin(uint8_t pin);
  void set_header_type(uint8_t type) { config_[0x0e] = type; }
  // Appends a capability of `length` bytes (header included) to the list; returns its offset.
  uint8_t add_capability(uint8_t id, uint8_t length);
  // Initial contents and write masks of registers the subclass owns (capabilities).
  void set_config(uint16_t offset, unsigned size, uint32_t value);
  void set_writable(uint16_t offset, unsigned size, uint32_t mask);
  uint32_t read_config_locked(uint16_t offset, unsigned size) const;

  // Hook for subclasses, after a write, without the lock.
  virtual void config_written(uint16_t /*offset*/, unsigned /*size*/) {}
  // Hook for config registers whose reads have side effects or are computed on demand (virtio's
  // PCI configuration access window, virtio 1.2 section 4.1.4.8): called without the lock before
  // every config read; a value returned replaces what config space holds.
  virtual std::optional<uint32_t> config_read_hook(uint16_t /*offset*/, unsigned /*size*/) const {
    return std::nullopt;
  }
  // Config space as stored (locks; bypasses config_read_hook).
  uint32_t stored_config(uint16_t offset, unsigned size) const;

 private:
  friend class MsixCapability;  // adds its capability and watches Message Control

  struct Bar {
    PciBarKind kind = PciBarKind::kMemory32;
    uint64_t size = 0;  // 0: not implemented (or the upper half of a 64-bit BAR)
    Device* region = nullptr;
    std::optional<uint64_t> mapped_at;
  };
  uint64_t bar_address(unsigned index) const;
  void update_mappings();
  void update_intx_line();

  const std::string name_;
  RateLimiter log_limiter_;
  mutable std::mutex mutex_;
  std::array<uint8_t, kConfigSize> config_{};
  std::array<uint8_t, kConfigSize> writable_{};
  std::array<uint8_t, kConfigSize> write_clear_{};
  std::array<Bar, kBars> bars_{};
  Bus* io_bus_ = nullptr;
  Bus* mmio_bus_ = nullptr;
  IrqLine* intx_line_ = nullptr;
  bool intx_level_ = false;
  bool intx_asserted_ = false;
  uint8_t next_capability_ = 0x40;
  uint8_t last_capability_ = 0;
  std::vector<std::function<void(uint16_t, unsigned)>> listeners_;
};

}  // namespace lamina::hw
