#pragma once
// Uart16550: a 16550A serial port (COM1 at 0x3f8/IRQ4, COM2 at 0x2f8/IRQ3), the guest console.
// Registers per the TI/National PC16550D data sheet: RBR/THR, IER, IIR/FCR, LCR (DLAB selects the
// divisor latch), MCR (with loopback), LSR, MSR, SCR; 16-byte receive FIFO, interrupts for line
// status, received data, THR empty and modem status, prioritised in IIR.
//
// Transmission is instantaneous: a byte written to THR goes straight to the backend and THR is
// empty again at once (LSR.THRE and TEMT always read 1). The character timeout interrupt is
// reported as soon as the FIFO holds data below its trigger level instead of four character
// times later; drivers treat both identically (they drain while LSR.DR is set).
// The IRQ output is gated by MCR.OUT2, as on PC boards.
//
// Ownership: borrows the IRQ line and the backend. Thread-safety: one internal mutex; the
// backend's transmit() is called without it held, so a backend may call receive() from there.

#include <array>
#include <cstdint>
#include <mutex>
#include <string>

#include "base/log.h"
#include "hw/device.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"

namespace lamina::hw {

// The host side of a serial port: `lamina run` connects one to stdio, tests to a buffer.
class SerialBackend {
 public:
  virtual ~SerialBackend() = default;
  // A byte the guest transmitted (not called in loopback mode). Should not block for long: the
  // writing vCPU waits for it.
  virtual void transmit(std::byte value) = 0;
  // The guest drained input from a FIFO that refused bytes earlier: offer them again.
  virtual void receive_space_available() {}
};

class Uart16550 final : public Device, public Stateful {
 public:
  static constexpr size_t kFifoSize = 16;

  // backend may be null (a port with nothing attached: output is dropped).
  Uart16550(std::string name, IrqLine& irq, SerialBackend* backend);

  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  // Host input: queues as many bytes as the receive FIFO has room for (one byte while FIFOs are
  // off, none in loopback mode) and returns how many it took; the rest should be offered again
  // after receive_space_available().
  size_t receive(std::span<const std::byte> bytes);

  // The rate the guest programmed, for logs (115200 / divisor; 0 when the divisor is 0).
  uint32_t baud_rate() const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  uint8_t read_register(uint64_t offset);
  // Returns true when `value` must be transmitted to the backend after unlocking.
  bool write_register(uint64_t offset, uint8_t value);
  void push_received(uint8_t value);
  uint8_t interrupt_identification() const;
  uint8_t modem_status_lines() const;
  void update_modem_status();
  void update_irq();
  size_t receive_capacity() const { return fifo_enabled_ ? kFifoSize : 1; }

  const std::string name_;
  IrqLine& irq_;
  SerialBackend* const backend_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::array<uint8_t, kFifoSize> receive_fifo_{};
  uint8_t receive_head_ = 0;
  uint8_t receive_count_ = 0;
  uint8_t interrupt_enable_ = 0;
  uint8_t line_control_ = 0;
  uint8_t modem_control_ = 0;
  uint8_t line_status_errors_ = 0;   // LSR bits 1-4, cleared by reading LSR
  uint8_t modem_status_deltas_ = 0;  // MSR bits 0-3, cleared by reading MSR
  uint8_t previous_lines_ = 0;       // MSR bits 4-7 at the last update
  uint8_t scratch_ = 0;
  uint8_t divisor_low_ = 0x0c;  // 9600 baud until the guest programs it
  uint8_t divisor_high_ = 0;
  bool fifo_enabled_ = false;
  uint8_t trigger_level_ = 1;
  bool transmit_empty_pending_ = false;  // THRE interrupt condition, cleared by IIR read/THR write
  bool backend_refused_ = false;
  bool irq_level_ = false;
};

}  // namespace lamina::hw
