#pragma once
// LocalApic: one vCPU's local APIC (Intel SDM vol. 3A, chapter 11), in xAPIC mode through its
// 4 KiB MMIO page and in x2APIC mode through MSRs 0x800-0x8ff: ID, version, TPR/PPR, EOI,
// LDR/DFR, SVR, ISR/TMR/IRR, ESR, ICR (fixed, lowest-priority, NMI, INIT, SIPI IPIs and the
// shorthands), the six LVT entries, and the timer (one-shot, periodic, TSC-deadline; divide
// configuration). Also IA32_APIC_BASE (0x1b) and IA32_TSC_DEADLINE (0x6e0).
//
// The vCPU routes its own accesses to this APIC's page (apic_base()) before the shared MMIO bus,
// as each CPU's APIC is private to it; likewise the MSRs above. The timer counts a 1 GHz bus
// clock before the divider; the TSC is defined as tsc_at(clock ns) = ns * tsc_hz / 1e9, and the
// CPU's RDTSC must use the same definition for TSC-deadline mode to agree.
//
// CPU side: has_pending_interrupt() (a maskable interrupt is deliverable; the CPU still checks
// RFLAGS.IF and its interrupt shadow), acknowledge() (the INTA cycle: returns the vector and moves
// it in service, or asks the 8259 through the ExtINT callback), take_nmi(), take_init(),
// take_startup(). When anything becomes pending, the kick callback runs (from any thread) so a
// halted or running vCPU thread re-checks.
//
// Ownership: borrows the bus, timers and callbacks. Thread-safety: one mutex; every call into
// the bus, the kick or the ExtINT callback is made after it is released, so IPIs to self, EOI
// broadcasts that re-deliver, and 8259 acknowledges cannot deadlock.

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>

#include "base/log.h"
#include "hw/apic_bus.h"
#include "hw/device.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"
#include "hw/timer_queue.h"

namespace lamina::hw {

class LocalApic final : public Device, public Stateful {
 public:
  static constexpr uint64_t kDefaultBase = 0xfee00000;
  static constexpr uint64_t kBusFrequencyHz = 1'000'000'000;
  static constexpr uint64_t kMinimumPeriodNs = 10'000;
  static constexpr uint32_t kMsrApicBase = 0x1b;
  static constexpr uint32_t kMsrTscDeadline = 0x6e0;

  LocalApic(uint32_t id, bool bootstrap, ApicBus& bus, TimerQueue& timers, uint64_t tsc_hz);

  // Machine wiring, before vCPUs run.
  void set_kick(std::function<void()> kick) { kick_ = std::move(kick); }
  void set_ext_int_acknowledge(std::function<uint8_t()> acknowledge) {
    ext_int_acknowledge_ = std::move(acknowledge);
  }
  // LINT0 (the 8259's INTR, usually ExtINT) and LINT1 (usually NMI).
  IrqLine& lint0() { return lint_[0]; }
  IrqLine& lint1() { return lint_[1]; }

  std::string_view name() const override { return "lapic"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  // MSR access from this vCPU; nullopt / false means the CPU raises #GP.
  std::optional<uint64_t> read_msr(uint32_t index) const;
  [[nodiscard]] bool write_msr(uint32_t index, uint64_t value);
  static bool handles_msr(uint32_t index) {
    return index == kMsrApicBase || index == kMsrTscDeadline || (index >= 0x800 && index <= 0x8ff);
  }
  uint64_t apic_base() const;
  // The page the xAPIC registers answer on, or nullopt (disabled or x2APIC mode).
  std::optional<uint64_t> mmio_page() const;

  // CPU side.
  bool has_pending_interrupt() const;
  uint8_t acknowledge();
  bool take_nmi();
  bool take_init();
  std::optional<uint8_t> take_startup();
  uint64_t tsc_at(uint64_t ns) const { return ns_to_ticks(ns, tsc_hz_); }

  // Bus side.
  uint32_t id() const { return id_; }
  bool matches_destination(uint32_t destination, bool logical) const;
  uint8_t processor_priority() const;
  void accept(const InterruptMessage& message);

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  class LintInput final : public IrqLine {
   public:
    void set_level(bool asserted) override { apic_->set_lint(index_, asserted); }
    LocalApic* apic_ = nullptr;
    unsigned index_ = 0;
  };
  struct Outbox {  // work done after unlocking
    std::optional<InterruptMessage> ipi;
    int eoi_vector = -1;
    bool kick = false;
  };
  enum Lvt : unsigned { kLvtTimer, kLvtThermal, kLvtPerformance, kLvtLint0, kLvtLint1, kLvtError };

  void set_lint(unsigned index, bool level);
  void reset_registers();
  bool globally_enabled() const { return (apic_base_ & (1u << 11)) != 0; }
  bool x2apic() const { return (apic_base_ & (1u << 10)) != 0; }
  bool software_enabled() const { return (svr_ & 0x100) != 0; }
  uint32_t logical_id() const;
  bool ext_int_deliverable() const;
  int highest_irr() const;
  int highest_isr() const;
  uint8_t ppr() const;
  void set_irr(uint8_t vector, bool level_triggered);
  void signal_error(uint32_t bits);
  uint32_t read_register(unsigned index, uint64_t now) const;
  // Returns false when the register is not writable (x2APIC: #GP).
  bool write_register(unsigned index, uint64_t value, uint64_t now, Outbox& outbox);
  void send_ipi(uint64_t icr, Outbox& outbox);
  void write_lvt(unsigned lvt, uint32_t value, uint64_t now);
  void end_of_interrupt(Outbox& outbox);
  [[nodiscard]] bool set_apic_base(uint64_t value);
  unsigned timer_mode() const { return (lvt_[kLvtTimer] >> 17) & 3; }
  uint64_t divide() const;
  uint64_t timer_elapsed_ns(uint64_t now) const {
    return now - static_cast<uint64_t>(timer_start_ns_);  // modular: no signed overflow
  }
  // Clock time `offset` ns after the timer started (0 when that is before the clock's zero).
  uint64_t timer_time(uint64_t offset) const {
    const auto time = static_cast<int64_t>(static_cast<uint64_t>(timer_start_ns_) + offset);
    return time < 0 ? 0 : static_cast<uint64_t>(time);
  }
  uint32_t current_count(uint64_t now) const;
  void arm_timer(uint64_t now);
  void on_timer(uint64_t now);
  void finish(const Outbox& outbox);

  const uint32_t id_;
  const bool bootstrap_;
  ApicBus& bus_;
  TimerQueue& timers_;
  const uint64_t tsc_hz_;
  Timer timer_;
  std::array<LintInput, 2> lint_;
  std::function<void()> kick_;
  std::function<uint8_t()> ext_int_acknowledge_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  uint64_t apic_base_ = 0;
  uint32_t tpr_ = 0, ldr_ = 0, dfr_ = 0xffffffff, svr_ = 0xff;
  uint32_t esr_ = 0, esr_pending_ = 0;
  std::array<uint32_t, 8> irr_{}, isr_{}, tmr_{};
  uint32_t icr_low_ = 0, icr_high_ = 0;
  std::array<uint32_t, 6> lvt_{};
  uint32_t initial_count_ = 0, divide_config_ = 0;
  // Signed: a timer restored from a checkpoint may have started before this clock's zero.
  int64_t timer_start_ns_ = 0;
  uint64_t periods_fired_ = 0;  // periodic: periods delivered since timer_start_ns_
  bool one_shot_fired_ = false;
  uint64_t tsc_deadline_ = 0;
  std::array<bool, 2> lint_level_{};
  bool ext_int_pending_ = false;
  bool nmi_pending_ = false;
  bool init_pending_ = false;
  int startup_vector_ = -1;
};

}  // namespace lamina::hw
