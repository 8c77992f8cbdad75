// The local APIC's register file: xAPIC MMIO and x2APIC MSR access, IA32_APIC_BASE, and saved
// state. The interrupt logic lives in local_apic.cc.
#include <algorithm>

#include "base/byte_order.h"
#include "hw/local_apic.h"
#include "hw/local_apic_layout.h"

namespace lamina::hw {

using namespace lapic_layout;  // NOLINT: the register names read best unqualified

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
    case kTpr:
      tpr_ = value32 & 0xff;
      outbox.kick = true;
      return true;
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
  writer.put(initial_count_, divide_config_, timer_elapsed_ns(now), periods_fired_, one_shot_fired_,
             tsc_deadline_, lint_level_[0], lint_level_[1], ext_int_pending_, nmi_pending_,
             init_pending_, static_cast<uint16_t>(startup_vector_ & 0x1ff));
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
