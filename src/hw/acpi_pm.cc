#include "hw/acpi_pm.h"

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
enum Window : unsigned { kEvent = 0, kControl = 1, kTimer = 2, kGpe = 3 };
// PM1 status bits that are write-1-to-clear and the enables that route them to the SCI.
constexpr uint16_t kStatusWritable = 0x8731;   // WAK, RTC, SLPBTN, PWRBTN, GBL, BM, TMR
constexpr uint16_t kEnableWritable = 0x0721;   // RTC_EN, SLPBTN_EN, PWRBTN_EN, GBL_EN, TMR_EN
constexpr uint16_t kControlWritable = 0x1c07;  // SCI_EN, BM_RLD, GBL_RLS, SLP_TYPx
constexpr uint16_t kSleepEnable = 1u << 13;
// Version 2 added the GPE0 block; a version 1 state had none, so its GPEs are clear.
constexpr uint32_t kStateVersion = 2;
}  // namespace

AcpiPm::AcpiPm(const Clock& clock, IrqLine& sci, std::function<void()> poweroff, bool timer_32bit,
               uint8_t s5_sleep_type)
    : clock_(clock),
      sci_(sci),
      poweroff_(std::move(poweroff)),
      timer_32bit_(timer_32bit),
      s5_sleep_type_(s5_sleep_type & 7),
      event_window_(*this, kEvent, "acpi-pm1a-event"),
      control_window_(*this, kControl, "acpi-pm1a-control"),
      timer_window_(*this, kTimer, "acpi-pm-timer"),
      gpe_window_(*this, kGpe, "acpi-gpe0") {}

uint32_t AcpiPm::timer_value() const {
  const uint64_t ticks = ns_to_ticks(clock_.now_ns(), kTimerFrequencyHz) + timer_offset_;
  return static_cast<uint32_t>(timer_32bit_ ? ticks : ticks & 0xffffff);
}

void AcpiPm::update_timer_status() {
  // TMR_STS: set whenever bit 23 (or 31) of the timer changes (ACPI 4.8.3.3).
  const bool top = (timer_value() >> (timer_32bit_ ? 31 : 23)) & 1;
  if (top != last_top_bit_) status_ |= kTimerStatus;
  last_top_bit_ = top;
}

void AcpiPm::update_sci() {
  // The timer's status does not interrupt (see the class comment); the rest do when enabled.
  const bool level = (control_ & 1) &&
                     ((status_ & enable_ & ~kTimerStatus & kEnableWritable) != 0 ||
                      (gpe_status_ & gpe_enable_) != 0);
  if (level != sci_level_) {
    sci_level_ = level;
    sci_.set_level(level);
  }
}

void AcpiPm::press_power_button() {
  std::lock_guard lock(mutex_);
  status_ |= kPowerButtonStatus;
  update_sci();
}

void AcpiPm::raise_gpe(unsigned gpe) {
  if (gpe >= 16) return;
  std::lock_guard lock(mutex_);
  gpe_status_ |= static_cast<uint16_t>(1u << gpe);
  update_sci();
}

void AcpiPm::window_read(unsigned window, uint64_t offset, std::span<std::byte> data) {
  uint64_t value = ~0ull;
  {
    std::lock_guard lock(mutex_);
    switch (window) {
      case kEvent:
        update_timer_status();
        value = status_ | (static_cast<uint64_t>(enable_) << 16) | 0xffffffff00000000ull;
        value >>= (offset & 3) * 8;
        break;
      case kControl:
        value = control_ | 0xffffffffffff0000ull;
        value >>= (offset & 1) * 8;
        break;
      case kTimer:
        value = timer_value() | 0xffffffff00000000ull;
        value >>= (offset & 3) * 8;
        break;
      case kGpe:
        value = gpe_status_ | (static_cast<uint64_t>(gpe_enable_) << 16) | 0xffffffff00000000ull;
        value >>= (offset & 3) * 8;
        break;
    }
  }
  store_le_sized(data, value);
}

void AcpiPm::window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) {
  if (data.empty()) return;
  bool power_off = false;
  {
    std::lock_guard lock(mutex_);
    const uint64_t value = load_le_sized(data) << ((offset & 3) * 8);
    const uint64_t mask = (data.size() >= 8 ? ~0ull : ((1ull << (data.size() * 8)) - 1))
                          << ((offset & 3) * 8);
    if (window == kEvent) {
      if (mask & 0xffff) status_ &= ~static_cast<uint16_t>(value & mask & kStatusWritable);
      if (mask & 0xffff0000) {
        const auto enable_mask = static_cast<uint16_t>(mask >> 16);
        enable_ = static_cast<uint16_t>((enable_ & ~enable_mask) |
                                        ((value >> 16) & enable_mask & kEnableWritable));
      }
    } else if (window == kGpe) {
      // GPE0_STS is write-1-to-clear, GPE0_EN read/write (4.8.4.1.1-2).
      if (mask & 0xffff) gpe_status_ &= ~static_cast<uint16_t>(value & mask);
      if (mask & 0xffff0000) {
        const auto enable_mask = static_cast<uint16_t>(mask >> 16);
        gpe_enable_ = static_cast<uint16_t>((gpe_enable_ & ~enable_mask) |
                                            ((value >> 16) & enable_mask));
      }
    } else if (window == kControl) {
      const auto control_mask = static_cast<uint16_t>(mask);
      const auto written = static_cast<uint16_t>(value & mask);
      control_ = static_cast<uint16_t>((control_ & ~control_mask) |
                                       (written & control_mask & kControlWritable));
      if (written & kSleepEnable) {
        const uint8_t sleep_type = (control_ >> 10) & 7;
        if (sleep_type == s5_sleep_type_) {
          power_off = true;
        } else {
          // Other sleep states are not offered: the guest wakes at once.
          status_ |= kWakeStatus;
          if (log_limiter_.allow()) {
            log_warn("acpi: guest requested sleep type {}; only S5 ({}) is supported", sleep_type,
                     s5_sleep_type_);
          }
        }
      }
    }
    // The PM timer is read-only.
    update_sci();
  }
  if (power_off && poweroff_) poweroff_();
}

void AcpiPm::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("acpi-pm", kStateVersion);
  writer.put(status_, enable_, control_, timer_value());
  writer.put(gpe_status_, gpe_enable_);
  writer.end_section();
}

Result<void> AcpiPm::load(StateReader& reader) {
  auto version = reader.begin_section("acpi-pm");
  if (!version) return fail(version.error());
  if (*version != 1 && *version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("acpi-pm: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  uint32_t timer = 0;
  if (auto result = reader.get(status_, enable_, control_, timer); !result) return result;
  gpe_status_ = 0;
  gpe_enable_ = 0;
  if (*version >= 2) {
    if (auto result = reader.get(gpe_status_, gpe_enable_); !result) return result;
  }
  status_ &= kStatusWritable;
  enable_ &= kEnableWritable;
  control_ &= kControlWritable;
  // Continue counting from the saved value on this host's clock.
  const uint64_t here = ns_to_ticks(clock_.now_ns(), kTimerFrequencyHz);
  timer_offset_ = (static_cast<uint64_t>(timer) - here) & 0xffffffffull;
  last_top_bit_ = (timer_value() >> (timer_32bit_ ? 31 : 23)) & 1;
  sci_level_ = false;
  update_sci();
  return reader.end_section();
}

}  // namespace lamina::hw
