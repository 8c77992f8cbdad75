#include "hw/local_apic.h"

#include <algorithm>

#include "base/byte_order.h"
#include "hw/local_apic_layout.h"

namespace lamina::hw {

using namespace lapic_layout;  // NOLINT: the register names read best unqualified

LocalApic::LocalApic(uint32_t id, bool bootstrap, ApicBus& bus, TimerQueue& timers, uint64_t tsc_hz)
    : id_(id),
      bootstrap_(bootstrap),
      bus_(bus),
      timers_(timers),
      tsc_hz_(tsc_hz == 0 ? 1 : tsc_hz),
      timer_(timers, [this](uint64_t now) { on_timer(now); }) {
  for (unsigned index = 0; index < 2; ++index) {
    lint_[index].apic_ = this;
    lint_[index].index_ = index;
  }
  // Power-up: enabled at the default base, xAPIC mode (SDM 11.4.4).
  apic_base_ = kDefaultBase | (1u << 11) | (bootstrap ? (1u << 8) : 0);
  reset_registers();
}

void LocalApic::reset_registers() {
  // Power-up and INIT state (SDM 11.4.7.1): everything cleared, LVTs masked, SVR 0xff.
  tpr_ = 0;
  ldr_ = 0;
  dfr_ = 0xffffffff;
  svr_ = 0xff;
  esr_ = esr_pending_ = 0;
  irr_ = {};
  isr_ = {};
  tmr_ = {};
  icr_low_ = icr_high_ = 0;
  lvt_.fill(kLvtMasked);
  initial_count_ = 0;
  divide_config_ = 0;
  periods_fired_ = 0;
  one_shot_fired_ = false;
  tsc_deadline_ = 0;
  ext_int_pending_ = false;
  timer_.cancel();
}

uint32_t LocalApic::logical_id() const {
  // x2APIC derives LDR from the ID: cluster in bits 31-16, one bit of 16 in bits 15-0.
  if (x2apic()) return ((id_ >> 4) << 16) | (1u << (id_ & 15));
  return ldr_;
}

bool LocalApic::matches_destination(uint32_t destination, bool logical) const {
  std::lock_guard lock(mutex_);
  if (!globally_enabled()) return false;
  if (!logical) {
    // 0xff is the xAPIC broadcast (also used by the 8-bit IOAPIC/MSI formats in x2APIC mode).
    return destination == id_ || destination == 0xff || destination == 0xffffffff;
  }
  if (x2apic()) {
    if (destination == 0xffffffff) return true;
    const uint32_t ldr = logical_id();
    return (destination >> 16) == (ldr >> 16) && (destination & ldr & 0xffff) != 0;
  }
  const uint32_t mask = destination & 0xff;
  if (mask == 0xff) return true;
  const uint32_t mine = ldr_ >> 24;
  if ((dfr_ >> 28) == 0xf) return (mine & mask) != 0;  // flat model
  // Cluster model: high nibble selects the cluster, low nibble the members.
  return (mine >> 4) == (mask >> 4) && (mine & mask & 0xf) != 0;
}

int LocalApic::highest_irr() const { return highest_bit(irr_); }
int LocalApic::highest_isr() const { return highest_bit(isr_); }

uint8_t LocalApic::ppr() const {
  // SDM 11.8.3.1: PPR is TPR when its class is at least the in-service class, else ISRV[7:4].
  const int isr = highest_isr();
  const uint32_t in_service_class = isr < 0 ? 0 : static_cast<uint32_t>(isr) & 0xf0;
  if ((tpr_ & 0xf0) >= in_service_class) return static_cast<uint8_t>(tpr_);
  return static_cast<uint8_t>(in_service_class);
}

uint8_t LocalApic::processor_priority() const {
  std::lock_guard lock(mutex_);
  return ppr();
}

void LocalApic::set_irr(uint8_t vector, bool level_triggered) {
  set_bit(irr_, vector, true);
  set_bit(tmr_, vector, level_triggered);
}

void LocalApic::signal_error(uint32_t bits) {
  esr_pending_ |= bits;
  const uint32_t lvt = lvt_[kLvtError];
  if (!(lvt & kLvtMasked) && (lvt & 0xff) >= 16) set_irr(static_cast<uint8_t>(lvt), false);
}

void LocalApic::accept(const InterruptMessage& message) {
  Outbox outbox;
  {
    std::lock_guard lock(mutex_);
    switch (message.mode) {
      case DeliveryMode::kFixed:
      case DeliveryMode::kLowestPriority:
        if (message.vector < 16) {
          signal_error(kEsrReceiveIllegalVector);
        } else {
          set_irr(message.vector, message.level_triggered);
        }
        break;
      case DeliveryMode::kNmi: nmi_pending_ = true; break;
      case DeliveryMode::kInit:
        // INIT resets the APIC but keeps its ID and base (SDM 11.4.7.3); the CPU does the rest.
        reset_registers();
        init_pending_ = true;
        break;
      case DeliveryMode::kStartup: startup_vector_ = message.vector; break;
      case DeliveryMode::kExtInt: ext_int_pending_ = true; break;
      case DeliveryMode::kSmi:
        if (log_limiter_.allow()) log_warn("lapic {}: SMI delivered but SMM is not supported", id_);
        return;
    }
    outbox.kick = true;
  }
  finish(outbox);
}

void LocalApic::set_lint(unsigned index, bool level) {
  Outbox outbox;
  {
    std::lock_guard lock(mutex_);
    const bool rising = level && !lint_level_[index];
    lint_level_[index] = level;
    const uint32_t lvt = lvt_[kLvtLint0 + index];
    if (!globally_enabled()) {
      // A disabled APIC passes INTR and NMI straight to the core.
      if (index == 1 && rising) nmi_pending_ = true;
      outbox.kick = rising;
    } else if (!(lvt & kLvtMasked)) {
      const auto mode = static_cast<DeliveryMode>((lvt >> 8) & 7);
      if (mode == DeliveryMode::kExtInt) {
        outbox.kick = rising;
      } else if (mode == DeliveryMode::kNmi && rising) {
        nmi_pending_ = true;
        outbox.kick = true;
      } else if (mode == DeliveryMode::kFixed && rising && (lvt & 0xff) >= 16) {
        set_irr(static_cast<uint8_t>(lvt), false);
        outbox.kick = true;
      }
    }
  }
  finish(outbox);
}

bool LocalApic::ext_int_deliverable() const {
  if (ext_int_pending_) return true;
  if (!lint_level_[0]) return false;
  if (!globally_enabled()) return true;
  const uint32_t lvt = lvt_[kLvtLint0];
  return !(lvt & kLvtMasked) && static_cast<DeliveryMode>((lvt >> 8) & 7) == DeliveryMode::kExtInt;
}

bool LocalApic::has_pending_interrupt() const {
  std::lock_guard lock(mutex_);
  if (ext_int_deliverable()) return true;
  if (!globally_enabled() || !software_enabled()) return false;
  const int vector = highest_irr();
  return vector >= 0 && (static_cast<uint32_t>(vector) & 0xf0) > (ppr() & 0xf0u);
}

uint8_t LocalApic::acknowledge() {
  std::function<uint8_t()> ext_int;
  uint8_t spurious = 0;
  {
    std::lock_guard lock(mutex_);
    spurious = static_cast<uint8_t>(svr_);
    if (ext_int_deliverable()) {
      ext_int_pending_ = false;
      ext_int = ext_int_acknowledge_;
    } else {
      const int vector = highest_irr();
      if (!globally_enabled() || !software_enabled() || vector < 0 ||
          (static_cast<uint32_t>(vector) & 0xf0) <= (ppr() & 0xf0u)) {
        // The request vanished or was masked by TPR: the spurious vector, nothing in service.
        return spurious;
      }
      set_bit(irr_, static_cast<unsigned>(vector), false);
      set_bit(isr_, static_cast<unsigned>(vector), true);
      return static_cast<uint8_t>(vector);
    }
  }
  return ext_int ? ext_int() : spurious;
}

bool LocalApic::take_nmi() {
  std::lock_guard lock(mutex_);
  return std::exchange(nmi_pending_, false);
}

bool LocalApic::take_init() {
  std::lock_guard lock(mutex_);
  return std::exchange(init_pending_, false);
}

std::optional<uint8_t> LocalApic::take_startup() {
  std::lock_guard lock(mutex_);
  const int vector = std::exchange(startup_vector_, -1);
  if (vector < 0) return std::nullopt;
  return static_cast<uint8_t>(vector);
}

void LocalApic::end_of_interrupt(Outbox& outbox) {
  const int vector = highest_isr();
  if (vector < 0) return;
  set_bit(isr_, static_cast<unsigned>(vector), false);
  // Level-triggered vectors are broadcast so the IOAPIC clears Remote IRR (SDM 11.8.5).
  if (test_bit(tmr_, static_cast<unsigned>(vector))) outbox.eoi_vector = vector;
  outbox.kick = true;  // a lower-priority request may now be deliverable
}

void LocalApic::send_ipi(uint64_t icr, Outbox& outbox) {
  InterruptMessage message;
  message.vector = static_cast<uint8_t>(icr & 0xff);
  message.mode = static_cast<DeliveryMode>((icr >> 8) & 7);
  message.logical = (icr >> 11) & 1;
  message.assert_level = (icr >> 14) & 1;
  message.level_triggered = (icr >> 15) & 1;
  message.shorthand = static_cast<DestinationShorthand>((icr >> 18) & 3);
  message.destination =
      x2apic() ? static_cast<uint32_t>(icr >> 32) : static_cast<uint32_t>(icr >> 56);
  message.source_id = id_;
  if (static_cast<unsigned>(message.mode) == 3) return;  // reserved delivery mode
  if ((message.mode == DeliveryMode::kFixed || message.mode == DeliveryMode::kLowestPriority) &&
      message.vector < 16) {
    signal_error(kEsrSendIllegalVector);
    return;
  }
  outbox.ipi = message;
}

uint64_t LocalApic::divide() const {
  // Divide configuration bits 0, 1 and 3 (SDM figure 11-10): 0b111 divides by 1.
  const uint32_t bits = (divide_config_ & 3) | ((divide_config_ >> 1) & 4);
  return bits == 7 ? 1 : (2u << bits);
}

uint32_t LocalApic::current_count(uint64_t now) const {
  if (initial_count_ == 0 || timer_mode() == kTimerTscDeadline) return 0;
  const uint64_t elapsed = timer_elapsed_ns(now) / divide();
  if (timer_mode() == kTimerPeriodic) {
    return static_cast<uint32_t>(initial_count_ - elapsed % initial_count_);
  }
  return elapsed >= initial_count_ ? 0 : static_cast<uint32_t>(initial_count_ - elapsed);
}

void LocalApic::arm_timer(uint64_t now) {
  const uint64_t period_ns = static_cast<uint64_t>(initial_count_) * divide();
  switch (timer_mode()) {
    case kTimerOneShot:
      if (initial_count_ != 0 && !one_shot_fired_) {
        timer_.arm_at(timer_time(period_ns));
        return;
      }
      break;
    case kTimerPeriodic:
      if (initial_count_ != 0) {
        const uint64_t next = timer_time((periods_fired_ + 1) * period_ns);
        timer_.arm_at(std::max(next, now + kMinimumPeriodNs));
        return;
      }
      break;
    case kTimerTscDeadline:
      if (tsc_deadline_ != 0) {
        timer_.arm_at(ticks_to_ns(tsc_deadline_, tsc_hz_));
        return;
      }
      break;
    default: break;
  }
  timer_.cancel();
}

void LocalApic::on_timer(uint64_t now) {
  Outbox outbox;
  {
    std::lock_guard lock(mutex_);
    now = std::max(now, timers_.clock().now_ns());
    bool fire = false;
    const uint64_t period_ns = static_cast<uint64_t>(initial_count_) * divide();
    switch (timer_mode()) {
      case kTimerOneShot:
        if (initial_count_ != 0 && !one_shot_fired_ && timer_elapsed_ns(now) >= period_ns) {
          one_shot_fired_ = true;
          fire = true;
        }
        break;
      case kTimerPeriodic:
        if (initial_count_ != 0) {
          // Missed periods coalesce into one interrupt.
          const uint64_t periods = timer_elapsed_ns(now) / period_ns;
          if (periods > periods_fired_) {
            periods_fired_ = periods;
            fire = true;
          }
        }
        break;
      case kTimerTscDeadline:
        if (tsc_deadline_ != 0 && tsc_at(now) >= tsc_deadline_) {
          tsc_deadline_ = 0;  // SDM 11.5.4.1: the deadline clears when the timer fires
          fire = true;
        }
        break;
      default: break;
    }
    const uint32_t lvt = lvt_[kLvtTimer];
    if (fire && !(lvt & kLvtMasked) && (lvt & 0xff) >= 16) {
      set_irr(static_cast<uint8_t>(lvt), false);
      outbox.kick = true;
    }
    arm_timer(now);
  }
  finish(outbox);
}

void LocalApic::write_lvt(unsigned lvt, uint32_t value, uint64_t now) {
  value &= kLvtWritable[lvt];
  // While software-disabled, the mask bits stay set (SDM 11.4.7.2).
  if (!software_enabled()) value |= kLvtMasked;
  if (lvt == kLvtTimer && ((value >> 17) & 3) == 3) value &= ~(3u << 17);  // reserved mode
  const unsigned old_mode = timer_mode();
  lvt_[lvt] = value;
  if (lvt == kLvtTimer && timer_mode() != old_mode) {
    // Switching modes disarms the timer (SDM 11.5.4.1).
    initial_count_ = 0;
    tsc_deadline_ = 0;
    arm_timer(now);
  }
}

void LocalApic::finish(const Outbox& outbox) {
  if (outbox.ipi) bus_.deliver(*outbox.ipi);
  if (outbox.eoi_vector >= 0) bus_.broadcast_eoi(static_cast<uint8_t>(outbox.eoi_vector));
  if (outbox.kick && kick_) kick_();
}

}  // namespace lamina::hw
