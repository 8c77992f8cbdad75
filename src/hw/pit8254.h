#pragma once
// Pit8254: the 8254 programmable interval timer at ports 0x40-0x43: three 16-bit counters at
// 1.193182 MHz with modes 0-5, binary or BCD counting, lo/hi byte access, counter latch and
// read-back commands (Intel 8254 data sheet, order 231164). Channel 0's OUT drives IRQ0; channel
// 2's GATE and OUT are reached through port 0x61 (SystemControlPort), which Linux uses to
// calibrate the TSC.
//
// Counters are not ticked: each channel remembers when it started counting and derives its count
// and output from the Clock. Channel 0 arms a Timer for its next output edge. In the periodic
// modes (2, 3) IRQ0 sees a pulse (low then high) at the start of every period and the timer is
// never armed closer than kMinimumPeriodNs apart, so a guest cannot flood the host; in modes 4
// and 5 the one-tick low strobe is a pulse too. Writing a new count in modes 2 and 3 restarts
// the period at once instead of at the next terminal count.
//
// Ownership: borrows the timer queue and IRQ line. Thread-safety: one mutex; the IRQ line is
// driven with it held (the PIC must not call back into the PIT).

#include <array>
#include <cstdint>
#include <mutex>

#include "base/log.h"
#include "hw/device.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"
#include "hw/timer_queue.h"

namespace lamina::hw {

class Pit8254 final : public Device, public Stateful {
 public:
  static constexpr uint64_t kFrequencyHz = 1193182;
  static constexpr uint64_t kMinimumPeriodNs = 20'000;

  Pit8254(TimerQueue& timers, IrqLine& irq0);

  std::string_view name() const override { return "pit8254"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  // Channel 2's GATE input and OUT output, wired to port 0x61 bits 0 and 5.
  void set_channel2_gate(bool level);
  bool channel2_gate() const;
  bool channel2_output() const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Channel {
    uint32_t count = 0x10000;  // the loaded initial count, 1..0x10000 (binary) or 1..10000 (BCD)
    uint8_t mode = 0;
    uint8_t access = 3;  // 1 low byte, 2 high byte, 3 low then high
    bool bcd = false;
    bool gate = false;
    bool loaded = false;        // a count was written since the control word
    bool triggered = false;     // modes 1 and 5: a gate edge started the count
    bool running = false;       // the counter is decrementing now
    uint64_t base_elapsed = 0;  // ticks counted before start_ns
    uint64_t start_ns = 0;
    bool write_high_next = false;
    uint8_t pending_low = 0;
    bool read_high_next = false;
    bool count_latched = false;
    uint16_t latched_count = 0;
    bool status_latched = false;
    uint8_t latched_status = 0;
    uint64_t next_event_tick = 0;  // channel 0: elapsed tick of the next IRQ0 edge, 0 = none
  };

  uint64_t elapsed(const Channel& channel, uint64_t now) const;
  uint16_t current_count(const Channel& channel, uint64_t now) const;
  bool output(const Channel& channel, uint64_t now) const;
  uint8_t status(const Channel& channel, uint64_t now) const;
  void write_control(uint8_t value, uint64_t now);
  void write_count(Channel& channel, uint8_t value, uint64_t now);
  void load_count(Channel& channel, uint32_t raw, uint64_t now);
  uint8_t read_channel(Channel& channel, uint64_t now);
  void set_gate(Channel& channel, bool level, uint64_t now);
  // Channel 0: drives IRQ0 to the output's idle level and arms the timer for the next edge.
  void reschedule(uint64_t now);
  void on_timer(uint64_t now);
  void set_irq_level(bool level);

  TimerQueue& timers_;
  IrqLine& irq0_;
  Timer timer_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::array<Channel, 3> channels_{};
  bool irq_level_ = false;
};

}  // namespace lamina::hw
