#include "hw/hpet.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint64_t kCapabilities = 0x000, kConfiguration = 0x010, kInterruptStatus = 0x020,
                   kMainCounter = 0x0f0, kTimerBase = 0x100, kTimerStride = 0x20;
constexpr uint64_t kTimerConfig = 0x00, kTimerComparator = 0x08, kTimerFsbRoute = 0x10;

constexpr uint64_t kPeriodFemtoseconds = 1'000'000'000'000'000ull / Hpet::kFrequencyHz;
// Revision 1, 64-bit counter (bit 13), legacy replacement capable (bit 15), vendor 0x8086.
constexpr uint64_t kCapabilityValue = 0x01 | ((Hpet::kTimers - 1) << 8) | (1u << 13) | (1u << 15) |
                                      (0x8086ull << 16) | (kPeriodFemtoseconds << 32);

constexpr uint64_t kLevelTriggered = 1u << 1;
constexpr uint64_t kInterruptEnable = 1u << 2;
constexpr uint64_t kPeriodic = 1u << 3;
constexpr uint64_t kPeriodicCapable = 1u << 4;
constexpr uint64_t kSize64Capable = 1u << 5;
constexpr uint64_t kValueSet = 1u << 6;
constexpr uint64_t kMode32 = 1u << 8;
constexpr uint64_t kRouteShift = 9;
constexpr uint64_t kRouteMask = 0x1full << kRouteShift;
constexpr uint64_t kConfigWritable =
    kLevelTriggered | kInterruptEnable | kPeriodic | kValueSet | kMode32 | kRouteMask;
constexpr uint32_t kStateVersion = 1;
}  // namespace

Hpet::Hpet(TimerQueue& timers, Routing routing) : timers_(timers), routing_(std::move(routing)) {
  for (unsigned index = 0; index < kTimers; ++index) {
    host_timers_[index] =
        std::make_unique<Timer>(timers, [this, index](uint64_t now) { on_timer(index, now); });
  }
  enabled_at_ns_ = timers_.clock().now_ns();
}

uint64_t Hpet::counter(uint64_t now) const {
  if (!enabled()) return counter_base_;
  return counter_base_ + ns_to_ticks(now - enabled_at_ns_, kFrequencyHz);
}

uint64_t Hpet::route_capability() const {
  uint64_t capability = 0;
  for (unsigned pin = 0; pin < routing_.ioapic.size(); ++pin) {
    if (routing_.ioapic[pin] != nullptr) capability |= 1ull << pin;
  }
  return capability;
}

IrqLine* Hpet::route(unsigned index) const {
  if (legacy_route() && index == 0) return routing_.legacy_timer0;
  if (legacy_route() && index == 1) return routing_.legacy_timer1;
  const unsigned pin =
      static_cast<unsigned>((comparators_[index].config & kRouteMask) >> kRouteShift);
  return pin < routing_.ioapic.size() ? routing_.ioapic[pin] : nullptr;
}

void Hpet::release_line(unsigned index) {
  Comparator& timer = comparators_[index];
  if (timer.asserted != nullptr) {
    timer.asserted->set_level(false);
    timer.asserted = nullptr;
  }
}

void Hpet::fire(unsigned index, uint64_t now) {
  Comparator& timer = comparators_[index];
  if (timer.config & kPeriodic) {
    // Advance the comparator past the counter by whole periods; missed periods coalesce.
    const uint64_t count = counter(now);
    const uint64_t width_mask = (timer.config & kMode32) ? 0xffffffffull : ~0ull;
    const uint64_t period = timer.period & width_mask;
    if (period != 0) {
      const uint64_t behind = (count - timer.comparator) & width_mask;
      timer.comparator = (timer.comparator + (behind / period + 1) * period) & width_mask;
    }
  }
  if (!(timer.config & kInterruptEnable)) return;
  IrqLine* line = route(index);
  if (timer.config & kLevelTriggered) {
    interrupt_status_ |= 1ull << index;
    if (line != nullptr && timer.asserted != line) {
      release_line(index);
      line->set_level(true);
      timer.asserted = line;
    }
  } else if (line != nullptr) {
    line->pulse();
  }
}

void Hpet::arm(unsigned index, uint64_t now) {
  Comparator& timer = comparators_[index];
  Timer& host_timer = *host_timers_[index];
  if (!enabled() || !(timer.config & kInterruptEnable)) {
    host_timer.cancel();
    return;
  }
  const uint64_t count = counter(now);
  uint64_t ticks = 0;
  if (timer.config & kMode32) {
    // 32-bit comparators match the counter's low half, which wraps every 2^32 ticks.
    ticks =
        (static_cast<uint32_t>(timer.comparator) - static_cast<uint32_t>(count)) & 0xffffffffull;
  } else if (timer.comparator >= count) {
    ticks = timer.comparator - count;
  } else if (timer.config & kPeriodic) {
    ticks = 0;  // behind: fire now and catch up
  } else {
    host_timer.cancel();  // a 64-bit one-shot already passed matches again only after 2^64 ticks
    return;
  }
  uint64_t deadline = saturating_add(now, ticks_to_ns(ticks, kFrequencyHz));
  if (timer.config & kPeriodic) deadline = std::max(deadline, now + kMinimumPeriodNs);
  host_timer.arm_at(deadline);
}

void Hpet::arm_all(uint64_t now) {
  for (unsigned index = 0; index < kTimers; ++index) arm(index, now);
}

void Hpet::on_timer(unsigned index, uint64_t now) {
  std::lock_guard lock(mutex_);
  now = std::max(now, timers_.clock().now_ns());
  const Comparator& timer = comparators_[index];
  bool reached = false;
  if (enabled() && (timer.config & kInterruptEnable)) {
    const uint64_t count = counter(now);
    reached = (timer.config & kMode32)
                  ? static_cast<uint32_t>(static_cast<uint32_t>(count) -
                                          static_cast<uint32_t>(timer.comparator)) < 0x80000000u
                  : count >= timer.comparator;
    if (reached) fire(index, now);
  }
  if (reached && !(timer.config & kPeriodic)) {
    // A 32-bit one-shot comparator matches again when the counter's low half wraps; a 64-bit
    // one would need 2^64 ticks.
    if (timer.config & kMode32) {
      host_timers_[index]->arm_at(now + ticks_to_ns(1ull << 32, kFrequencyHz));
    }
    return;
  }
  arm(index, now);
}

uint64_t Hpet::read_register(uint64_t offset, uint64_t now) const {
  switch (offset) {
    case kCapabilities: return kCapabilityValue;
    case kConfiguration: return config_;
    case kInterruptStatus: return interrupt_status_;
    case kMainCounter: return counter(now);
  }
  if (offset >= kTimerBase && offset < kTimerBase + kTimers * kTimerStride) {
    const Comparator& timer = comparators_[(offset - kTimerBase) / kTimerStride];
    switch ((offset - kTimerBase) % kTimerStride) {
      case kTimerConfig:
        return (timer.config & ~kValueSet) | kPeriodicCapable | kSize64Capable |
               (route_capability() << 32);
      case kTimerComparator:
        return (timer.config & kMode32) ? (timer.comparator & 0xffffffff) : timer.comparator;
      case kTimerFsbRoute: return 0;
    }
  }
  return 0;
}

bool Hpet::write_register(uint64_t offset, uint64_t value, uint64_t mask, uint64_t now) {
  auto merge = [&](uint64_t old) { return (old & ~mask) | (value & mask); };
  switch (offset) {
    case kConfiguration: {
      const uint64_t old = config_;
      const uint64_t updated = merge(old) & 3;
      if ((old ^ updated) & 1) {
        // Halting freezes the counter; running resumes it from the frozen value.
        counter_base_ = counter(now);
        enabled_at_ns_ = now;
      }
      config_ = updated;
      if ((old ^ updated) & 2) {
        for (unsigned index = 0; index < 2; ++index) release_line(index);
      }
      arm_all(now);
      return ((old ^ updated) & 2) != 0;
    }
    case kInterruptStatus: {
      // Write 1 to clear; a level-triggered line drops with its status bit.
      const uint64_t clear = value & mask & interrupt_status_;
      interrupt_status_ &= ~clear;
      for (unsigned index = 0; index < kTimers; ++index) {
        if (clear & (1ull << index)) release_line(index);
      }
      return false;
    }
    case kMainCounter:
      counter_base_ = merge(counter(now));
      enabled_at_ns_ = now;
      arm_all(now);
      return false;
  }
  if (offset < kTimerBase || offset >= kTimerBase + kTimers * kTimerStride) return false;
  const unsigned index = static_cast<unsigned>((offset - kTimerBase) / kTimerStride);
  Comparator& timer = comparators_[index];
  switch ((offset - kTimerBase) % kTimerStride) {
    case kTimerConfig: {
      uint64_t updated = merge(timer.config) & kConfigWritable;
      const unsigned pin = static_cast<unsigned>((updated & kRouteMask) >> kRouteShift);
      if (!((route_capability() >> pin) & 1)) {
        // INT_ROUTE_CNF outside INT_ROUTE_CAP is undefined (spec 2.3.9.2.1): keep the old one.
        if (log_limiter_.allow())
          log_warn("hpet: timer {} routed to unwired IOAPIC pin {}", index, pin);
        updated = (updated & ~kRouteMask) | (timer.config & kRouteMask);
      }
      if (updated & kMode32) {
        timer.comparator &= 0xffffffff;
        timer.period &= 0xffffffff;
      }
      const uint64_t route_bits = kRouteMask | kLevelTriggered | kInterruptEnable;
      if ((updated ^ timer.config) & route_bits) release_line(index);
      if (!(updated & kLevelTriggered)) interrupt_status_ &= ~(1ull << index);
      timer.config = updated;
      arm(index, now);
      return false;
    }
    case kTimerComparator: {
      // In periodic mode a write sets the period, and the comparator too while VAL_SET is set
      // (spec 2.3.9.2.2; Linux writes the first deadline with VAL_SET, then the period).
      const uint64_t width_mask = (timer.config & kMode32) ? 0xffffffffull : ~0ull;
      if (!(timer.config & kPeriodic) || (timer.config & kValueSet)) {
        timer.comparator = merge(timer.comparator) & width_mask;
      }
      if (timer.config & kPeriodic) timer.period = merge(timer.period) & width_mask;
      timer.config &= ~kValueSet;
      arm(index, now);
      return false;
    }
    default: return false;  // FSB route: FSB delivery is not offered
  }
}

void Hpet::read(uint64_t offset, std::span<std::byte> data) {
  if (data.empty() || offset >= kSize) {
    store_le_sized(data, ~0ull);
    return;
  }
  uint64_t value = 0;
  {
    std::lock_guard lock(mutex_);
    value = read_register(offset & ~7ull, timers_.clock().now_ns());
  }
  // 32-bit accesses reach either half of a 64-bit register.
  store_le_sized(data, value >> ((offset & 7) * 8));
}

void Hpet::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.empty() || offset >= kSize || (offset & 7) + data.size() > 8) return;
  const unsigned shift = static_cast<unsigned>(offset & 7) * 8;
  const uint64_t width_mask = data.size() >= 8 ? ~0ull : ((1ull << (data.size() * 8)) - 1);
  const uint64_t value = load_le_sized(data) << shift;
  const uint64_t mask = width_mask << shift;
  bool legacy_changed = false;
  bool legacy = false;
  {
    std::lock_guard lock(mutex_);
    legacy_changed = write_register(offset & ~7ull, value, mask, timers_.clock().now_ns());
    legacy = legacy_route();
  }
  if (legacy_changed && routing_.legacy_route_changed) routing_.legacy_route_changed(legacy);
}

void Hpet::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("hpet", kStateVersion);
  writer.put(config_, interrupt_status_, counter(timers_.clock().now_ns()));
  for (const Comparator& timer : comparators_)
    writer.put(timer.config, timer.comparator, timer.period);
  writer.end_section();
}

Result<void> Hpet::load(StateReader& reader) {
  auto version = reader.begin_section("hpet");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("hpet: saved state version {} is not supported", *version));
  }
  bool legacy = false;
  {
    std::lock_guard lock(mutex_);
    uint64_t count = 0;
    if (auto result = reader.get(config_, interrupt_status_, count); !result) return result;
    config_ &= 3;
    interrupt_status_ &= (1u << kTimers) - 1;
    counter_base_ = count;
    const uint64_t now = timers_.clock().now_ns();
    enabled_at_ns_ = now;
    for (unsigned index = 0; index < kTimers; ++index) {
      Comparator& timer = comparators_[index];
      release_line(index);
      if (auto result = reader.get(timer.config, timer.comparator, timer.period); !result) {
        return result;
      }
      timer.config &= kConfigWritable & ~kValueSet;
      const unsigned pin = static_cast<unsigned>((timer.config & kRouteMask) >> kRouteShift);
      if (!((route_capability() >> pin) & 1)) timer.config &= ~kRouteMask;
      // Re-raise the lines of level-triggered interrupts still pending.
      IrqLine* line = route(index);
      if ((interrupt_status_ >> index) & 1 && (timer.config & kLevelTriggered) &&
          (timer.config & kInterruptEnable) && line != nullptr) {
        line->set_level(true);
        timer.asserted = line;
      }
    }
    arm_all(now);
    legacy = legacy_route();
  }
  if (routing_.legacy_route_changed) routing_.legacy_route_changed(legacy);
  return reader.end_section();
}

}  // namespace lamina::hw
