#pragma once
// Rtc: the MC146818-compatible CMOS real-time clock and NVRAM at ports 0x70 (index; bit 7 masks
// NMI) and 0x71 (data). Time registers 0-9 in BCD or binary and 12- or 24-hour format per
// register B, update-in-progress (UIP) for the last 244 us of each second, periodic, alarm and
// update-ended interrupts on IRQ8 (register C reports and read-clears them), the SET bit that
// freezes the time for writing, and 128 bytes of CMOS memory including the memory-size fields
// firmware reads (Motorola MC146818A data sheet; the memory fields follow the IBM AT/SeaBIOS
// layout).
//
// Time comes from a wall-clock reading taken at construction plus the Clock's progress, so the
// guest's clock runs with the host's and a test can fix both. Flags are derived from the clock
// when read; the timer is armed only while an interrupt is enabled.
//
// Ownership: borrows timers and IRQ line. Thread-safety: one mutex; IRQ8 is driven with it held.

#include <array>
#include <cstdint>
#include <mutex>

#include "base/log.h"
#include "hw/device.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"
#include "hw/timer_queue.h"

namespace lamina::hw {

class Rtc final : public Device, public Stateful {
 public:
  // unix_seconds: the wall-clock time (UTC seconds since 1970) at the clock's current reading.
  Rtc(TimerQueue& timers, IrqLine& irq8, int64_t unix_seconds);

  std::string_view name() const override { return "rtc"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  // Machine setup of CMOS memory bytes (index 0x0e-0x7f; clock registers are refused).
  void set_cmos_byte(uint8_t index, uint8_t value);
  // Fills the memory-size fields: 0x15/0x16 base KiB, 0x17/0x18 and 0x30/0x31 KiB above 1 MiB,
  // 0x34/0x35 64 KiB blocks above 16 MiB (below 4 GiB), 0x5b-0x5d 64 KiB blocks above 4 GiB.
  void set_memory_size(uint64_t below_4g_bytes, uint64_t above_4g_bytes);
  // SeaBIOS reads the number of CPUs minus one from 0x5f.
  void set_cpu_count(unsigned count);

  // Port 0x70 bit 7: the guest masked NMIs.
  bool nmi_masked() const;
  // The guest's current time as UTC seconds since 1970 (what it set, or the host's).
  int64_t unix_seconds() const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Civil {
    int64_t year;
    unsigned month, day, hour, minute, second, weekday;  // weekday 1 = Sunday
  };
  static Civil to_civil(int64_t unix_seconds);
  static int64_t from_civil(const Civil& civil);

  // The clock shifted one second forward, so a restored phase never puts base_ns_ below zero.
  uint64_t shifted_now() const { return timers_.clock().now_ns() + kNanosecondsPerSecond; }
  int64_t seconds_at(uint64_t now) const;
  bool running() const;
  uint8_t encode(unsigned value) const;
  unsigned decode(uint8_t value) const;
  uint8_t encode_hour(unsigned hour) const;
  unsigned decode_hour(uint8_t value) const;
  // The time register `index` (0, 2, 4, 6-9, 0x32) for the given time.
  uint8_t time_register(uint8_t index, const Civil& civil) const;
  void store_time_registers(int64_t seconds);
  int64_t registers_to_seconds() const;
  uint8_t read_data(uint64_t now);
  void write_data(uint8_t value, uint64_t now);
  // Sets PF/UF/AF for every boundary passed since the last call, raises IRQ8, re-arms the timer.
  void update(uint64_t now);
  uint64_t periodic_frequency() const;
  void on_timer(uint64_t now);

  TimerQueue& timers_;
  IrqLine& irq8_;
  Timer timer_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::array<uint8_t, 128> cmos_{};
  uint8_t index_ = 0;
  bool nmi_masked_ = false;
  int64_t base_seconds_ = 0;  // wall time at base_ns_ while running
  uint64_t base_ns_ = 0;
  int64_t frozen_seconds_ = 0;  // wall time while SET or the divider is stopped
  int64_t last_second_ = 0;     // the last second whose update was accounted for
  uint64_t last_period_ = 0;    // the last periodic tick accounted for
  bool irq_level_ = false;
};

}  // namespace lamina::hw
