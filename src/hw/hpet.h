#pragma once
// Hpet: the High Precision Event Timer at MMIO 0xfed00000 (IA-PC HPET specification 1.0a):
// a 64-bit main counter at 100 MHz derived from the Clock, and three comparators, each one-shot
// or periodic, 32- or 64-bit, edge- or level-triggered (level: GINTR_STA bit until written 1),
// routed to an IOAPIC input chosen by the guest among those the machine wired, or through the
// legacy replacement route (timer 0 -> IRQ0, timer 1 -> IRQ8). FSB (MSI) delivery is not offered.
//
// The machine is told when the legacy replacement route changes, so it can disconnect the PIT's
// and the RTC's own IRQ0/IRQ8 (GatedIrqLine), as the chipset does.
//
// Ownership: borrows the timer queue and the IRQ lines in Routing. Thread-safety: one mutex;
// IRQ lines are driven with it held; the legacy-route callback runs after it is released.

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

#include "base/log.h"
#include "hw/device.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"
#include "hw/timer_queue.h"

namespace lamina::hw {

class Hpet final : public Device, public Stateful {
 public:
  static constexpr unsigned kTimers = 3;
  static constexpr uint64_t kFrequencyHz = 100'000'000;
  static constexpr uint64_t kDefaultBase = 0xfed00000;
  static constexpr uint64_t kSize = 0x400;
  static constexpr uint64_t kMinimumPeriodNs = 10'000;

  struct Routing {
    std::array<IrqLine*, 24> ioapic{};  // IOAPIC inputs a timer may use; null = not offered
    IrqLine* legacy_timer0 = nullptr;   // legacy replacement route of timer 0 (ISA IRQ0)
    IrqLine* legacy_timer1 = nullptr;   // legacy replacement route of timer 1 (ISA IRQ8)
    std::function<void(bool enabled)> legacy_route_changed;
  };

  Hpet(TimerQueue& timers, Routing routing);

  std::string_view name() const override { return "hpet"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Comparator {
    uint64_t config = 0;
    uint64_t comparator = ~0ull;
    uint64_t period = 0;
    IrqLine* asserted = nullptr;  // the line held high by a level-triggered interrupt
  };

  uint64_t read_register(uint64_t offset, uint64_t now) const;
  // Returns true when the legacy route changed (the callback runs after unlocking).
  bool write_register(uint64_t offset, uint64_t value, uint64_t mask, uint64_t now);
  uint64_t counter(uint64_t now) const;
  bool enabled() const { return (config_ & 1) != 0; }
  bool legacy_route() const { return (config_ & 2) != 0; }
  uint64_t route_capability() const;
  IrqLine* route(unsigned index) const;
  void release_line(unsigned index);
  void fire(unsigned index, uint64_t now);
  void arm(unsigned index, uint64_t now);
  void arm_all(uint64_t now);
  void on_timer(unsigned index, uint64_t now);

  TimerQueue& timers_;
  Routing routing_;
  std::array<std::unique_ptr<Timer>, kTimers> host_timers_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  uint64_t config_ = 0;
  uint64_t interrupt_status_ = 0;
  uint64_t counter_base_ = 0;  // counter value at enabled_at_ns_ (or while halted)
  uint64_t enabled_at_ns_ = 0;
  std::array<Comparator, kTimers> comparators_{};
};

}  // namespace lamina::hw
