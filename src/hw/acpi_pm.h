#pragma once
// AcpiPm: the ACPI fixed-feature power management registers the machine declares in the FADT
// (ACPI 6.5 section 4.8): the PM1a event block (PM1_STS and PM1_EN, 2 bytes each), the PM1a
// control block (SCI_EN, SLP_TYPx, SLP_EN) and the PM timer (3.579545 MHz, 24- or 32-bit per the
// FADT's TMR_VAL_EXT flag). Port numbers are the machine's choice (e.g. 0x600, 0x604, 0x608).
//
// Sleep: writing SLP_EN with SLP_TYP equal to the S5 value the machine's DSDT declares in \_S5
// calls the poweroff callback; other sleep states are not offered and wake at once (WAK_STS).
// The power button (press_power_button) sets PWRBTN_STS and raises the SCI when enabled, which
// is how a host asks an ACPI guest to shut down. TMR_STS is set when the timer's top bit
// toggles, but the timer overflow does not raise the SCI (no guest relies on it).
// GPE0 (4.8.4.1): a block of 16 general-purpose event status bits (write 1 to clear) and
// their 16 enables; raise_gpe() sets a status bit, and the SCI is asserted while any enabled
// status is set, so a device (PCI hotplug) can make the guest run its \_GPE._Exx method.
// SCI_EN reads 1 from reset: there is no SMM, so the FADT's SMI_CMD is 0 and ACPI mode is fixed.
//
// Ownership: borrows clock and SCI line; owns its windows. Thread-safety: one mutex; the SCI
// is driven with it held, the poweroff callback runs after it is released.

#include <cstdint>
#include <functional>
#include <mutex>

#include "base/log.h"
#include "hw/clock.h"
#include "hw/device_window.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"

namespace lamina::hw {

class AcpiPm final : public WindowedDevice, public Stateful {
 public:
  static constexpr uint64_t kTimerFrequencyHz = 3'579'545;
  static constexpr uint16_t kTimerStatus = 1u << 0;
  static constexpr uint16_t kPowerButtonStatus = 1u << 8;
  static constexpr uint16_t kWakeStatus = 1u << 15;

  AcpiPm(const Clock& clock, IrqLine& sci, std::function<void()> poweroff, bool timer_32bit,
         uint8_t s5_sleep_type);

  Device& event_block() { return event_window_; }      // PM1a_EVT_BLK, 4 bytes
  Device& control_block() { return control_window_; }  // PM1a_CNT_BLK, 2 bytes
  Device& timer_block() { return timer_window_; }      // PM_TMR_BLK, 4 bytes
  Device& gpe0_block() { return gpe_window_; }         // GPE0_BLK, 4 bytes (status, enable)
  static constexpr uint8_t kGpe0Length = 4;

  void press_power_button();
  // Sets GPE0 status bit `gpe` (0-15), an edge the guest's _Exx method answers.
  void raise_gpe(unsigned gpe);

  void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) override;
  void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) override;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  uint32_t timer_value() const;
  void update_timer_status();
  void update_sci();

  const Clock& clock_;
  IrqLine& sci_;
  std::function<void()> poweroff_;
  const bool timer_32bit_;
  const uint8_t s5_sleep_type_;
  DeviceWindow event_window_;
  DeviceWindow control_window_;
  DeviceWindow timer_window_;
  DeviceWindow gpe_window_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  uint16_t status_ = 0;
  uint16_t enable_ = 0;
  uint16_t control_ = 1;       // SCI_EN
  uint16_t gpe_status_ = 0;
  uint16_t gpe_enable_ = 0;
  uint64_t timer_offset_ = 0;  // ticks added to the clock-derived count (restored state)
  bool last_top_bit_ = false;
  bool sci_level_ = false;
};

}  // namespace lamina::hw
