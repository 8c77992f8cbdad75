#pragma once
// Pic8259Pair: the PC's two cascaded 8259A interrupt controllers (master at 0x20, slave at 0xa0
// on the master's IR2) plus the PIIX/ICH edge/level control registers (ELCR) at 0x4d0/0x4d1.
// Implements ICW1-4, OCW1-3, fixed and rotating priority, specific/non-specific EOI, automatic
// EOI, special mask mode, poll mode, special fully nested mode and spurious IRQ7/IRQ15.
// Intel 8259A data sheet (order 231468) is the reference; trigger mode comes from ELCR (ICW1.LTIM
// is ignored, as on PIIX-class chipsets).
//
// Interfaces: devices raise inputs through input(irq) (an IrqLine per IRQ 0-15); the master's
// INT output drives `output` (the CPU's INTR pin or a LAPIC's LINT0); the CPU's interrupt
// acknowledge cycle is acknowledge(), which returns the vector.
//
// Ownership: owns its three windows and 16 input lines; borrows `output`.
// Thread-safety: one mutex; `output` is driven with it held, so the output's implementation must
// not call back into this PIC (a LAPIC calls acknowledge() only after dropping its own lock).

#include <array>
#include <cstdint>
#include <mutex>

#include "base/log.h"
#include "hw/device_window.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"

namespace lamina::hw {

class Pic8259Pair final : public WindowedDevice, public Stateful {
 public:
  explicit Pic8259Pair(IrqLine& output);

  // Windows to map: master ports 0x20-0x21, slave ports 0xa0-0xa1, ELCR 0x4d0-0x4d1.
  Device& master_ports() { return master_window_; }
  Device& slave_ports() { return slave_window_; }
  Device& elcr_ports() { return elcr_window_; }

  // The IRQ line for input irq (0-15); IRQ2 is the cascade and ignores external input.
  IrqLine& input(unsigned irq) { return inputs_[irq & 15]; }
  void set_irq(unsigned irq, bool level);

  // The interrupt acknowledge cycle: returns the vector of the highest-priority request and
  // moves it in service, or the spurious vector (IRQ7/IRQ15 of the chip) when none is pending.
  uint8_t acknowledge();
  // Whether the master's INT output is asserted.
  bool interrupt_pending() const;

  // Machine setup: level-triggered IRQs (bit n = IRQ n), e.g. the PCI INTx lines.
  void set_elcr(uint16_t mask);

  void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) override;
  void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) override;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  // One 8259A.
  struct Chip {
    uint8_t irr = 0;              // interrupt request register
    uint8_t isr = 0;              // in-service register
    uint8_t imr = 0;              // interrupt mask register
    uint8_t input_level = 0;      // current input pin levels (edge detection)
    uint8_t elcr = 0;             // level-triggered inputs
    uint8_t vector_base = 0;      // ICW2 & 0xf8
    uint8_t lowest_priority = 7;  // the IR with the lowest priority (rotation)
    uint8_t init_step = 0;        // 0 = operational; 1..3 expect ICW2..ICW4
    bool expect_icw4 = false;
    bool single = false;
    bool auto_eoi = false;
    bool rotate_on_auto_eoi = false;
    bool special_fully_nested = false;
    bool special_mask = false;
    bool read_isr = false;
    bool poll = false;
  };
  class Input final : public IrqLine {
   public:
    void set_level(bool asserted) override { pic_->set_irq(irq_, asserted); }
    Pic8259Pair* pic_ = nullptr;
    unsigned irq_ = 0;
  };

  static void set_chip_input(Chip& chip, unsigned pin, bool level);
  // Highest-priority IR that may interrupt now, or -1 (8259A: priority resolver).
  int pending_irq(const Chip& chip, bool is_master) const;
  static int highest_in_service(const Chip& chip);
  static void end_of_interrupt(Chip& chip, int irq, bool rotate);
  void acknowledge_chip(Chip& chip, int irq);
  void write_command(Chip& chip, uint8_t value);
  void write_data(Chip& chip, uint8_t value);
  uint8_t poll(Chip& chip, bool is_master);
  void update();

  IrqLine& output_;
  DeviceWindow master_window_;
  DeviceWindow slave_window_;
  DeviceWindow elcr_window_;
  std::array<Input, 16> inputs_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  Chip master_;
  Chip slave_;
  bool output_level_ = false;
};

}  // namespace lamina::hw
