#include "hw/rtc.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint8_t kSeconds = 0x00, kSecondsAlarm = 0x01, kMinutes = 0x02, kMinutesAlarm = 0x03,
                  kHours = 0x04, kHoursAlarm = 0x05, kWeekday = 0x06, kDay = 0x07, kMonth = 0x08,
                  kYear = 0x09, kRegisterA = 0x0a, kRegisterB = 0x0b, kRegisterC = 0x0c,
                  kRegisterD = 0x0d, kCentury = 0x32;

constexpr uint8_t kAUpdateInProgress = 0x80;
constexpr uint8_t kADividerMask = 0x70;
constexpr uint8_t kADividerNormal = 0x20;  // 32.768 kHz time base, divider running
constexpr uint8_t kBSet = 0x80, kBPeriodicEnable = 0x40, kBAlarmEnable = 0x20,
                  kBUpdateEnable = 0x10, kBBinary = 0x04, kB24Hour = 0x02;
constexpr uint8_t kCIrq = 0x80, kCPeriodic = 0x40, kCAlarm = 0x20, kCUpdate = 0x10;
constexpr uint8_t kDValidRam = 0x80;

// UIP rises 244 us before each update (MC146818A data sheet, "Update cycle").
constexpr uint64_t kUpdateInProgressNs = 244'000;
constexpr uint32_t kStateVersion = 1;

bool is_time_register(uint8_t index) {
  return index == kSeconds || index == kMinutes || index == kHours ||
         (index >= kWeekday && index <= kYear) || index == kCentury;
}

int64_t floor_divide(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}
}  // namespace

// Days from 1970-01-01 to a proleptic Gregorian date and back, counting 400-year eras of
// 146097 days from a year that starts in March (so the leap day is the era year's last day).
Rtc::Civil Rtc::to_civil(int64_t unix_seconds) {
  const int64_t days = floor_divide(unix_seconds, 86400);
  const int64_t in_day = unix_seconds - days * 86400;
  const int64_t shifted = days + 719468;  // days from 0000-03-01
  const int64_t era = floor_divide(shifted, 146097);
  const int64_t day_of_era = shifted - era * 146097;
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t month_index = (5 * day_of_year + 2) / 153;  // 0 = March
  Civil civil{};
  civil.day = static_cast<unsigned>(day_of_year - (153 * month_index + 2) / 5 + 1);
  civil.month = static_cast<unsigned>(month_index < 10 ? month_index + 3 : month_index - 9);
  civil.year = year_of_era + era * 400 + (civil.month <= 2 ? 1 : 0);
  civil.hour = static_cast<unsigned>(in_day / 3600);
  civil.minute = static_cast<unsigned>(in_day / 60 % 60);
  civil.second = static_cast<unsigned>(in_day % 60);
  // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
  civil.weekday = static_cast<unsigned>(((days + 4) % 7 + 7) % 7 + 1);
  return civil;
}

int64_t Rtc::from_civil(const Civil& civil) {
  const int64_t year = civil.year - (civil.month <= 2 ? 1 : 0);
  const int64_t era = floor_divide(year, 400);
  const int64_t year_of_era = year - era * 400;
  const int64_t month = civil.month;
  const int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + civil.day - 1;
  const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  const int64_t days = era * 146097 + day_of_era - 719468;
  return days * 86400 + civil.hour * 3600 + civil.minute * 60 + civil.second;
}

Rtc::Rtc(TimerQueue& timers, IrqLine& irq8, int64_t unix_seconds)
    : timers_(timers), irq8_(irq8), timer_(timers, [this](uint64_t now) { on_timer(now); }) {
  cmos_[kRegisterA] = kADividerNormal | 0x06;  // 1024 Hz periodic rate, as firmware leaves it
  cmos_[kRegisterB] = kB24Hour;
  cmos_[kRegisterD] = kDValidRam;
  base_seconds_ = unix_seconds;
  base_ns_ = shifted_now();
  frozen_seconds_ = unix_seconds;
  last_second_ = unix_seconds;
}

bool Rtc::running() const { return (cmos_[kRegisterA] & kADividerMask) == kADividerNormal; }

int64_t Rtc::seconds_at(uint64_t now) const {
  if (!running() || (cmos_[kRegisterB] & kBSet)) return frozen_seconds_;
  return base_seconds_ + static_cast<int64_t>((now - base_ns_) / kNanosecondsPerSecond);
}

uint8_t Rtc::encode(unsigned value) const {
  if (cmos_[kRegisterB] & kBBinary) return static_cast<uint8_t>(value);
  return static_cast<uint8_t>(((value / 10 % 10) << 4) | (value % 10));
}

unsigned Rtc::decode(uint8_t value) const {
  if (cmos_[kRegisterB] & kBBinary) return value;
  return (value >> 4) * 10 + (value & 0x0f);
}

uint8_t Rtc::encode_hour(unsigned hour) const {
  if (cmos_[kRegisterB] & kB24Hour) return encode(hour);
  // 12-hour mode: 12, 1..11 with bit 7 marking PM.
  unsigned twelve = hour % 12 == 0 ? 12 : hour % 12;
  return static_cast<uint8_t>(encode(twelve) | (hour >= 12 ? 0x80 : 0));
}

unsigned Rtc::decode_hour(uint8_t value) const {
  if (cmos_[kRegisterB] & kB24Hour) return decode(value) % 24;
  unsigned twelve = decode(value & 0x7f) % 12;
  return twelve + ((value & 0x80) ? 12 : 0);
}

uint8_t Rtc::time_register(uint8_t index, const Civil& civil) const {
  switch (index) {
    case kSeconds: return encode(civil.second);
    case kMinutes: return encode(civil.minute);
    case kHours: return encode_hour(civil.hour);
    case kWeekday: return encode(civil.weekday);
    case kDay: return encode(civil.day);
    case kMonth: return encode(civil.month);
    case kYear: return encode(static_cast<unsigned>(civil.year % 100));
    case kCentury: return encode(static_cast<unsigned>(civil.year / 100 % 100));
  }
  return 0;
}

void Rtc::store_time_registers(int64_t seconds) {
  Civil civil = to_civil(seconds);
  for (uint8_t index : {kSeconds, kMinutes, kHours, kWeekday, kDay, kMonth, kYear, kCentury}) {
    cmos_[index] = time_register(index, civil);
  }
}

int64_t Rtc::registers_to_seconds() const {
  // Out-of-range values (no real date) are clamped rather than trusted.
  Civil civil{};
  unsigned century = decode(cmos_[kCentury]);
  if (century < 19 || century > 99) century = 20;
  civil.year = century * 100 + decode(cmos_[kYear]) % 100;
  civil.month = std::clamp(decode(cmos_[kMonth]), 1u, 12u);
  civil.day = std::clamp(decode(cmos_[kDay]), 1u, 31u);
  civil.hour = decode_hour(cmos_[kHours]);
  civil.minute = decode(cmos_[kMinutes]) % 60;
  civil.second = decode(cmos_[kSeconds]) % 60;
  return from_civil(civil);
}

uint64_t Rtc::periodic_frequency() const {
  // Register A rate select: 0 off, 1 and 2 alias 256 and 128 Hz, else 65536 >> RS Hz.
  const unsigned rate = cmos_[kRegisterA] & 0x0f;
  if (rate == 0 || !running()) return 0;
  if (rate < 3) return rate == 1 ? 256 : 128;
  return 65536u >> rate;
}

void Rtc::update(uint64_t now) {
  uint8_t& flags = cmos_[kRegisterC];
  const uint8_t control = cmos_[kRegisterB];
  const bool ticking = running() && !(control & kBSet);
  if (ticking) {
    const int64_t second = seconds_at(now);
    if (second != last_second_) {
      flags |= kCUpdate;
      Civil civil = to_civil(second);
      // An alarm byte of 0xc0-0xff matches any value ("don't care").
      bool match = true;
      for (auto [alarm, time] :
           {std::pair{kSecondsAlarm, kSeconds}, std::pair{kMinutesAlarm, kMinutes},
            std::pair{kHoursAlarm, kHours}}) {
        if (cmos_[alarm] < 0xc0 && cmos_[alarm] != time_register(time, civil)) match = false;
      }
      if (match) flags |= kCAlarm;
      last_second_ = second;
    }
  }
  const uint64_t frequency = periodic_frequency();
  uint64_t tick = 0;
  if (frequency != 0) {
    tick = ns_to_ticks(now - base_ns_, frequency);
    if (tick != last_period_) flags |= kCPeriodic;
    last_period_ = tick;
  }
  if ((flags & control & (kCPeriodic | kCAlarm | kCUpdate)) != 0) flags |= kCIrq;
  const bool level = (flags & kCIrq) != 0;
  if (level != irq_level_) {
    irq_level_ = level;
    irq8_.set_level(level);
  }

  uint64_t deadline = UINT64_MAX;
  if (ticking && (control & (kBUpdateEnable | kBAlarmEnable))) {
    const uint64_t next_second = (now - base_ns_) / kNanosecondsPerSecond + 1;
    deadline = base_ns_ + next_second * kNanosecondsPerSecond;
  }
  if (frequency != 0 && (control & kBPeriodicEnable)) {
    deadline = std::min(deadline, base_ns_ + ticks_to_ns(tick + 1, frequency));
  }
  if (deadline == UINT64_MAX) {
    timer_.cancel();
  } else {
    timer_.arm_at(deadline - kNanosecondsPerSecond);
  }
}

void Rtc::on_timer(uint64_t now) {
  std::lock_guard lock(mutex_);
  (void)now;
  update(shifted_now());
}

uint8_t Rtc::read_data(uint64_t now) {
  const uint8_t index = index_;
  if (is_time_register(index) && !(cmos_[kRegisterB] & kBSet)) {
    return time_register(index, to_civil(seconds_at(now)));
  }
  switch (index) {
    case kRegisterA: {
      uint8_t value = cmos_[kRegisterA] & 0x7f;
      bool ticking = running() && !(cmos_[kRegisterB] & kBSet);
      if (ticking &&
          (now - base_ns_) % kNanosecondsPerSecond >= kNanosecondsPerSecond - kUpdateInProgressNs) {
        value |= kAUpdateInProgress;
      }
      return value;
    }
    case kRegisterC: {
      update(now);
      uint8_t value = cmos_[kRegisterC];
      cmos_[kRegisterC] = 0;  // reading C clears every flag and releases IRQ8
      update(now);
      return value;
    }
    case kRegisterD: return kDValidRam;
    default: return cmos_[index];
  }
}

void Rtc::write_data(uint8_t value, uint64_t now) {
  const uint8_t index = index_;
  const bool set = (cmos_[kRegisterB] & kBSet) != 0;
  if (is_time_register(index)) {
    if (set) {
      cmos_[index] = value;
    } else {
      // Change one field of the running clock, keeping the phase within the second.
      const int64_t before = seconds_at(now);
      store_time_registers(before);
      cmos_[index] = value;
      const int64_t after = registers_to_seconds();
      base_seconds_ += after - before;
      frozen_seconds_ += after - before;
      last_second_ = seconds_at(now);
    }
    return;
  }
  switch (index) {
    case kRegisterA: {
      const bool was_running = running();
      const int64_t seconds = seconds_at(now);
      cmos_[kRegisterA] = value & 0x7f;  // UIP is read-only
      if (was_running != running()) {
        // Stopping the divider freezes the time; restarting it counts from here.
        frozen_seconds_ = seconds;
        base_seconds_ = seconds;
        base_ns_ = now;
        last_second_ = seconds;
        last_period_ = 0;
      }
      // A new rate starts counting its periods from here, not from the old rate's count.
      const uint64_t frequency = periodic_frequency();
      last_period_ = frequency != 0 ? ns_to_ticks(now - base_ns_, frequency) : 0;
      break;
    }
    case kRegisterB: {
      const bool new_set = (value & kBSet) != 0;
      if (new_set && !set) {
        frozen_seconds_ = seconds_at(now);
        store_time_registers(frozen_seconds_);
        value &= ~kBUpdateEnable;  // data sheet: SET clears UIE
      }
      const uint8_t format = cmos_[kRegisterB];
      cmos_[kRegisterB] = value;
      if (!new_set && set) {
        // Decode what the guest wrote in the format it was written in.
        cmos_[kRegisterB] = format;
        const int64_t seconds = registers_to_seconds();
        cmos_[kRegisterB] = value;
        frozen_seconds_ = seconds;
        base_seconds_ = seconds;
        base_ns_ = now;
        last_second_ = seconds;
        last_period_ = 0;
      }
      break;
    }
    case kRegisterC:
    case kRegisterD:
      if (log_limiter_.allow()) {
        log_warn("rtc: guest wrote {:#04x} to read-only register {:#x}; ignored", value, index);
      }
      return;
    default: cmos_[index] = value; return;
  }
  update(now);
}

void Rtc::read(uint64_t offset, std::span<std::byte> data) {
  uint8_t value = 0xff;
  if (offset == 1) {
    std::lock_guard lock(mutex_);
    value = read_data(shifted_now());
  }
  store_le_sized(data, 0xffffffffffffff00ull | value);
}

void Rtc::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.empty() || offset > 1) return;
  const auto value = static_cast<uint8_t>(data[0]);
  std::lock_guard lock(mutex_);
  if (offset == 0) {
    index_ = value & 0x7f;
    nmi_masked_ = (value & 0x80) != 0;
  } else {
    write_data(value, shifted_now());
  }
}

void Rtc::set_cmos_byte(uint8_t index, uint8_t value) {
  if (index < 0x0e || index >= cmos_.size() || index == kCentury) return;
  std::lock_guard lock(mutex_);
  cmos_[index] = value;
}

void Rtc::set_memory_size(uint64_t below_4g_bytes, uint64_t above_4g_bytes) {
  constexpr uint64_t kMiB = 1 << 20;
  const uint64_t extended_kib =
      below_4g_bytes > kMiB ? std::min<uint64_t>((below_4g_bytes - kMiB) / 1024, 0xffff) : 0;
  const uint64_t above_16m = below_4g_bytes > 16 * kMiB
                                 ? std::min<uint64_t>((below_4g_bytes - 16 * kMiB) >> 16, 0xffff)
                                 : 0;
  const uint64_t above_4g = std::min<uint64_t>(above_4g_bytes >> 16, 0xffffff);
  std::lock_guard lock(mutex_);
  cmos_[0x15] = 0x80;  // 640 KiB base memory
  cmos_[0x16] = 0x02;
  for (uint8_t low : {uint8_t{0x17}, uint8_t{0x30}}) {
    cmos_[low] = static_cast<uint8_t>(extended_kib);
    cmos_[low + 1] = static_cast<uint8_t>(extended_kib >> 8);
  }
  cmos_[0x34] = static_cast<uint8_t>(above_16m);
  cmos_[0x35] = static_cast<uint8_t>(above_16m >> 8);
  cmos_[0x5b] = static_cast<uint8_t>(above_4g);
  cmos_[0x5c] = static_cast<uint8_t>(above_4g >> 8);
  cmos_[0x5d] = static_cast<uint8_t>(above_4g >> 16);
}

void Rtc::set_cpu_count(unsigned count) {
  std::lock_guard lock(mutex_);
  cmos_[0x5f] = static_cast<uint8_t>(count == 0 ? 0 : count - 1);
}

bool Rtc::nmi_masked() const {
  std::lock_guard lock(mutex_);
  return nmi_masked_;
}

int64_t Rtc::unix_seconds() const {
  std::lock_guard lock(mutex_);
  return seconds_at(shifted_now());
}

void Rtc::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  const uint64_t now = shifted_now();
  writer.begin_section("rtc", kStateVersion);
  writer.put_bytes(std::as_bytes(std::span(cmos_)));
  writer.put(index_, nmi_masked_, static_cast<uint64_t>(seconds_at(now)),
             (now - base_ns_) % kNanosecondsPerSecond);
  writer.end_section();
}

Result<void> Rtc::load(StateReader& reader) {
  auto version = reader.begin_section("rtc");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("rtc: saved state version {} is not supported", *version));
  }
  std::array<uint8_t, 128> cmos{};
  uint8_t index = 0;
  bool nmi_masked = false;
  uint64_t seconds = 0;
  uint64_t phase_ns = 0;
  if (auto result = reader.get_bytes(std::as_writable_bytes(std::span(cmos))); !result)
    return result;
  if (auto result = reader.get(index, nmi_masked, seconds, phase_ns); !result) return result;
  if (index >= cmos.size() || phase_ns >= kNanosecondsPerSecond) {
    return fail(ErrorCode::kCorrupt, "rtc: saved index or second phase is out of range");
  }
  std::lock_guard lock(mutex_);
  const uint64_t now = shifted_now();
  cmos_ = cmos;
  cmos_[kRegisterA] &= 0x7f;
  cmos_[kRegisterD] = kDValidRam;
  index_ = index;
  nmi_masked_ = nmi_masked;
  base_seconds_ = static_cast<int64_t>(seconds);
  frozen_seconds_ = base_seconds_;
  base_ns_ = now >= phase_ns ? now - phase_ns : 0;
  last_second_ = seconds_at(now);
  const uint64_t frequency = periodic_frequency();
  last_period_ = frequency != 0 ? ns_to_ticks(now - base_ns_, frequency) : 0;
  irq_level_ = false;
  update(now);
  return reader.end_section();
}

}  // namespace lamina::hw
