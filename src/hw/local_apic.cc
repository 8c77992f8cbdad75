#include "hw/local_apic.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
// Register indexes (MMIO offset >> 4, or x2APIC MSR - 0x800); SDM table 11-1 and 11-6.
constexpr unsigned kId = 0x02, kVersion = 0x03, kTpr = 0x08, kApr = 0x09, kPpr = 0x0a,
                   kEoi = 0x0b, kLdr = 0x0d, kDfr = 0x0e, kSvr = 0x0f, kIsr = 0x10, kTmr = 0x18,
                   kIrr = 0x20, kEsr = 0x28, kIcrLow = 0x30, kIcrHigh = 0x31, kLvtBase = 0x32,
                   kInitialCount = 0x38, kCurrentCount = 0x39, kDivide = 0x3e, kSelfIpi = 0x3f;

// Version 0x14 (integrated APIC), six LVT entries (max LVT index 5).
constexpr uint32_t kVersionValue = 0x00050014;
constexpr uint32_t kLvtMasked = 0x10000;
// Writable bits per LVT entry: timer (vector, mask, mode), thermal, performance, LINT0, LINT1
// (vector, delivery mode, polarity, trigger, mask), error (vector, mask).
constexpr uint32_t kLvtWritable[6] = {0x700ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff};
constexpr uint32_t kEsrSendIllegalVector = 0x20;
constexpr uint32_t kEsrReceiveIllegalVector = 0x40;
constexpr unsigned kTimerOneShot = 0, kTimerPeriodic = 1, kTimerTscDeadline = 2;
constexpr uint32_t kStateVersion = 1;

bool test_bit(const std::array<uint32_t, 8>& bits, unsigned vector) {
  return (bits[vector / 32] >> (vector % 32)) & 1;
}
void set_bit(std::array<uint32_t, 8>& bits, unsigned vector, bool value) {
  const uint32_t mask = 1u << (vector % 32);
  bits[vector / 32] = value ? bits[vector / 32] | mask : bits[vector / 32] & ~mask;
}
int highest_bit(const std::array<uint32_t, 8>& bits) {
  for (int word = 7; word >= 0; --word) {
    if (bits[word] != 0) return word * 32 + 31 - __builtin_clz(bits[word]);
  }
  return -1;
}
}  // namespace

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
  message.destination = x2apic() ? static_cast<uint32_t>(icr >> 32)
                                 : static_cast<uint32_t>(icr >> 56);
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

uint32_t LocalApic::read_register(unsigned index, uint64_t now) const {
  if (index >= kIsr && index < kIsr + 8) return isr_[index - kIsr];
  if (index >= kTmr && index < kTmr + 8) return tmr_[index - kTmr];
  if (index >= kIrr && index < kIrr + 8) return irr_[index - kIrr];
  if (index >= kLvtBase && index < kLvtBase + 6) return lvt_[index - kLvtBase];
  switch (index) {
    case kId: return x2apic() ? id_ : id_ << 24;
    case kVersion: return kVersionValue;
    case kTpr: return tpr_;
    case kApr: return 0;
    case kPpr: return ppr();
    case kLdr: return logical_id();
    case kDfr: return dfr_;
    case kSvr: return svr_;
    case kEsr: return esr_;
    case kIcrLow: return icr_low_;
    case kIcrHigh: return icr_high_;
    case kInitialCount: return initial_count_;
    case kCurrentCount: return current_count(now);
    case kDivide: return divide_config_;
  }
  return 0;
}

bool LocalApic::write_register(unsigned index, uint64_t value, uint64_t now, Outbox& outbox) {
  const auto value32 = static_cast<uint32_t>(value);
  if (index >= kLvtBase && index < kLvtBase + 6) {
    write_lvt(index - kLvtBase, value32, now);
    return true;
  }
  switch (index) {
    case kTpr: tpr_ = value32 & 0xff; outbox.kick = true; return true;
    case kEoi: end_of_interrupt(outbox); return true;
    case kSvr: {
      // Bits 0-7 spurious vector, 8 software enable, 9 focus check; EOI broadcast suppression
      // (bit 12) is not offered by the version register, so it is not writable.
      svr_ = value32 & 0x3ff;
      if (!software_enabled()) {
        for (uint32_t& lvt : lvt_) lvt |= kLvtMasked;
      }
      outbox.kick = true;
      return true;
    }
    case kEsr:
      // A write latches the errors collected since the previous write (SDM 11.5.3).
      esr_ = esr_pending_;
      esr_pending_ = 0;
      return true;
    case kIcrLow:
      if (x2apic()) {
        icr_low_ = value32 & ~0x1000u;
        icr_high_ = static_cast<uint32_t>(value >> 32);
        send_ipi(value, outbox);
      } else {
        icr_low_ = value32 & ~0x1000u;  // delivery status: always idle, delivery is immediate
        send_ipi((static_cast<uint64_t>(icr_high_) << 32) | icr_low_, outbox);
      }
      return true;
    case kInitialCount:
      if (timer_mode() != kTimerTscDeadline) {
        initial_count_ = value32;
        timer_start_ns_ = static_cast<int64_t>(now);
        periods_fired_ = 0;
        one_shot_fired_ = false;
        arm_timer(now);
      }
      return true;
    case kDivide: divide_config_ = value32 & 0xb; return true;
  }
  if (x2apic()) {
    if (index == kSelfIpi) {
      if ((value32 & 0xff) < 16) {
        signal_error(kEsrSendIllegalVector);
      } else {
        set_irr(static_cast<uint8_t>(value32), false);
        outbox.kick = true;
      }
      return true;
    }
    return false;  // read-only or absent in x2APIC mode: #GP
  }
  switch (index) {
    case kId: return true;  // the ID is fixed by the machine; writes are ignored
    case kLdr: ldr_ = value32 & 0xff000000; return true;
    case kDfr: dfr_ = value32 | 0x0fffffff; return true;
    case kIcrHigh: icr_high_ = value32 & 0xff000000; return true;
  }
  return true;  // xAPIC: writes to read-only registers are ignored
}

void LocalApic::read(uint64_t offset, std::span<std::byte> data) {
  uint32_t value = 0xffffffff;
  {
    std::lock_guard lock(mutex_);
    if (globally_enabled() && !x2apic() && offset < 0x1000) {
      value = read_register(static_cast<unsigned>(offset >> 4), timers_.clock().now_ns());
    }
  }
  // Registers are 32 bits at 16-byte strides; narrower reads take bytes of the dword.
  const unsigned shift = static_cast<unsigned>(offset & 3) * 8;
  const uint64_t bytes = (offset & 0xf) < 4 ? (value >> shift) : 0;
  store_le_sized(data, data.size() + (offset & 3) > 4 ? (bytes | 0xffffffff00000000ull) : bytes);
}

void LocalApic::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.size() != 4 || (offset & 0xf) != 0 || offset >= 0x1000) {
    // SDM 11.4.1: registers take 32-bit aligned accesses only.
    if (log_limiter_.allow()) {
      log_warn("lapic {}: ignoring {}-byte write at offset {:#x}", id_, data.size(), offset);
    }
    return;
  }
  Outbox outbox;
  {
    std::lock_guard lock(mutex_);
    if (!globally_enabled() || x2apic()) return;
    write_register(static_cast<unsigned>(offset >> 4), load_le<uint32_t>(data.data()),
                   timers_.clock().now_ns(), outbox);
  }
  finish(outbox);
}

bool LocalApic::set_apic_base(uint64_t value) {
  // Bits 8 (BSP) is read-only; bits 0-7, 9 and 36-63 are reserved (36-bit physical addresses).
  if (value & 0xfffffff0000002ffull & ~(1ull << 8)) return false;
  const bool enable = (value >> 11) & 1;
  const bool extended = (value >> 10) & 1;
  // SDM 11.12.5: x2APIC without enable, x2APIC -> xAPIC, and disabled -> x2APIC are invalid.
  if (extended && !enable) return false;
  if (x2apic() && enable && !extended) return false;
  if (!globally_enabled() && enable && extended) return false;
  const bool was_enabled = globally_enabled();
  apic_base_ = (value & ~(1ull << 8)) | (bootstrap_ ? (1ull << 8) : 0);
  if (was_enabled && !enable) reset_registers();
  return true;
}

std::optional<uint64_t> LocalApic::read_msr(uint32_t index) const {
  std::lock_guard lock(mutex_);
  if (index == kMsrApicBase) return apic_base_;
  if (index == kMsrTscDeadline) return timer_mode() == kTimerTscDeadline ? tsc_deadline_ : 0;
  if (index < 0x800 || index > 0x8ff || !x2apic()) return std::nullopt;
  const unsigned reg = index - 0x800;
  if (reg == kIcrLow) return (static_cast<uint64_t>(icr_high_) << 32) | icr_low_;
  const bool readable = reg == kId || reg == kVersion || reg == kTpr || reg == kPpr ||
                        reg == kLdr || reg == kSvr || (reg >= kIsr && reg < kIrr + 8) ||
                        reg == kEsr || (reg >= kLvtBase && reg < kLvtBase + 6) ||
                        reg == kInitialCount || reg == kCurrentCount || reg == kDivide;
  if (!readable) return std::nullopt;
  return read_register(reg, timers_.clock().now_ns());
}

bool LocalApic::write_msr(uint32_t index, uint64_t value) {
  Outbox outbox;
  bool ok = true;
  {
    std::lock_guard lock(mutex_);
    const uint64_t now = timers_.clock().now_ns();
    if (index == kMsrApicBase) {
      ok = set_apic_base(value);
    } else if (index == kMsrTscDeadline) {
      if (timer_mode() == kTimerTscDeadline) {
        tsc_deadline_ = value;
        arm_timer(now);
      }
    } else if (index < 0x800 || index > 0x8ff || !x2apic()) {
      ok = false;
    } else {
      const unsigned reg = index - 0x800;
      // EOI and ESR take only zero; the upper half of 32-bit registers is reserved.
      if ((reg == kEoi || reg == kEsr) && value != 0) {
        ok = false;
      } else if (reg != kIcrLow && (value >> 32) != 0) {
        ok = false;
      } else {
        ok = write_register(reg, value, now, outbox);
      }
    }
  }
  finish(outbox);
  return ok;
}

uint64_t LocalApic::apic_base() const {
  std::lock_guard lock(mutex_);
  return apic_base_;
}

std::optional<uint64_t> LocalApic::mmio_page() const {
  std::lock_guard lock(mutex_);
  if (!globally_enabled() || x2apic()) return std::nullopt;
  return apic_base_ & 0xffffff000ull;
}

void LocalApic::finish(const Outbox& outbox) {
  if (outbox.ipi) bus_.deliver(*outbox.ipi);
  if (outbox.eoi_vector >= 0) bus_.broadcast_eoi(static_cast<uint8_t>(outbox.eoi_vector));
  if (outbox.kick && kick_) kick_();
}

void LocalApic::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  const uint64_t now = timers_.clock().now_ns();
  writer.begin_section("lapic", kStateVersion);
  writer.put(id_, apic_base_, tpr_, ldr_, dfr_, svr_, esr_, esr_pending_, icr_low_, icr_high_);
  for (const auto* bits : {&irr_, &isr_, &tmr_}) {
    for (uint32_t word : *bits) writer.put(word);
  }
  for (uint32_t lvt : lvt_) writer.put(lvt);
  // The timer as time since it started, so it resumes on another host's clock.
  writer.put(initial_count_, divide_config_, timer_elapsed_ns(now), periods_fired_,
             one_shot_fired_, tsc_deadline_, lint_level_[0], lint_level_[1], ext_int_pending_,
             nmi_pending_, init_pending_, static_cast<uint16_t>(startup_vector_ & 0x1ff));
  writer.end_section();
}

Result<void> LocalApic::load(StateReader& reader) {
  auto version = reader.begin_section("lapic");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("lapic: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  uint32_t saved_id = 0;
  uint64_t since_start = 0;
  uint16_t startup = 0;
  if (auto result = reader.get(saved_id, apic_base_, tpr_, ldr_, dfr_, svr_, esr_, esr_pending_,
                               icr_low_, icr_high_);
      !result) {
    return result;
  }
  if (saved_id != id_) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("lapic: saved state is for APIC ID {}, not {}", saved_id, id_));
  }
  for (auto* bits : {&irr_, &isr_, &tmr_}) {
    for (uint32_t& word : *bits) {
      if (auto result = reader.get(word); !result) return result;
    }
  }
  for (uint32_t& lvt : lvt_) {
    if (auto result = reader.get(lvt); !result) return result;
  }
  if (auto result = reader.get(initial_count_, divide_config_, since_start, periods_fired_,
                               one_shot_fired_, tsc_deadline_, lint_level_[0], lint_level_[1],
                               ext_int_pending_, nmi_pending_, init_pending_, startup);
      !result) {
    return result;
  }
  for (unsigned index = 0; index < lvt_.size(); ++index) lvt_[index] &= kLvtWritable[index];
  if (timer_mode() == 3) lvt_[kLvtTimer] &= ~(3u << 17);
  tpr_ &= 0xff;
  svr_ &= 0x3ff;
  divide_config_ &= 0xb;
  apic_base_ = (apic_base_ & ~(1ull << 8)) | (bootstrap_ ? (1ull << 8) : 0);
  startup_vector_ = startup > 0xff ? -1 : startup;
  const uint64_t now = timers_.clock().now_ns();
  timer_start_ns_ = static_cast<int64_t>(now) - static_cast<int64_t>(since_start & INT64_MAX);
  arm_timer(now);
  return reader.end_section();
}

}  // namespace lamina::hw
