#include "hw/pit8254.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint64_t kControlPort = 3;
constexpr uint32_t kStateVersion = 1;

// BCD counts decode nibble by nibble; a digit above 9 (undefined in the data sheet) counts as 9.
uint32_t decode_bcd(uint32_t raw) {
  uint32_t value = 0;
  for (int shift = 12; shift >= 0; shift -= 4)
    value = value * 10 + std::min((raw >> shift) & 15, 9u);
  return value;
}

uint16_t encode_bcd(uint32_t value) {
  uint16_t raw = 0;
  for (int shift = 0; shift < 16; shift += 4) {
    raw |= static_cast<uint16_t>((value % 10) << shift);
    value /= 10;
  }
  return raw;
}

bool strobe_mode(uint8_t mode) { return mode == 4 || mode == 5; }
bool periodic_mode(uint8_t mode) { return mode == 2 || mode == 3; }
bool gate_triggered_mode(uint8_t mode) { return mode == 1 || mode == 5; }
}  // namespace

Pit8254::Pit8254(TimerQueue& timers, IrqLine& irq0)
    : timers_(timers), irq0_(irq0), timer_(timers, [this](uint64_t now) { on_timer(now); }) {
  // Channels 0 and 1 have GATE tied high on the PC; channel 2's comes from port 0x61.
  channels_[0].gate = true;
  channels_[1].gate = true;
}

uint64_t Pit8254::elapsed(const Channel& channel, uint64_t now) const {
  uint64_t since = channel.running && now > channel.start_ns ? now - channel.start_ns : 0;
  return channel.base_elapsed + (channel.running ? ns_to_ticks(since, kFrequencyHz) : 0);
}

uint16_t Pit8254::current_count(const Channel& channel, uint64_t now) const {
  const uint32_t modulus = channel.bcd ? 10000 : 0x10000;
  const uint64_t n = channel.count;
  uint64_t value = n;
  if (channel.loaded && !(gate_triggered_mode(channel.mode) && !channel.triggered)) {
    const uint64_t d = elapsed(channel, now);
    if (channel.mode == 2) {
      value = n - d % n;
    } else if (channel.mode == 3) {
      // Mode 3 decrements by two, through each half period in turn.
      const uint64_t position = d % n;
      const uint64_t half = (n + 1) / 2;
      value = position < half ? n - 2 * position : n - 2 * (position - half);
      value = std::max<uint64_t>(value & ~uint64_t{1}, 2);
    } else {
      // Modes 0, 1, 4, 5 keep counting down past zero, wrapping around.
      value = (n % modulus + modulus - d % modulus) % modulus;
    }
  }
  value %= modulus;
  return channel.bcd ? encode_bcd(static_cast<uint32_t>(value)) : static_cast<uint16_t>(value);
}

bool Pit8254::output(const Channel& channel, uint64_t now) const {
  // After a control word OUT is low in mode 0 and high in every other mode.
  if (!channel.loaded) return channel.mode != 0;
  if (gate_triggered_mode(channel.mode) && !channel.triggered) return true;
  const uint64_t n = channel.count;
  const uint64_t d = elapsed(channel, now);
  switch (channel.mode) {
    case 0:
    case 1: return d >= n;
    case 2: return !channel.running || n < 2 || d % n != n - 1;
    case 3: return !channel.running || d % n < (n + 1) / 2;
    default: return d != n;  // modes 4 and 5: one clock low at terminal count
  }
}

uint8_t Pit8254::status(const Channel& channel, uint64_t now) const {
  // Read-back status byte (8254 data sheet, figure "Status byte").
  uint8_t value =
      static_cast<uint8_t>((channel.access << 4) | (channel.mode << 1) | (channel.bcd ? 1 : 0));
  if (output(channel, now)) value |= 0x80;
  if (!channel.loaded || channel.write_high_next) value |= 0x40;  // null count
  return value;
}

void Pit8254::read(uint64_t offset, std::span<std::byte> data) {
  uint8_t value = 0xff;
  if (offset < kControlPort && !data.empty()) {
    std::lock_guard lock(mutex_);
    value = read_channel(channels_[offset], timers_.clock().now_ns());
  }
  store_le_sized(data, 0xffffffffffffff00ull | value);
}

void Pit8254::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.empty() || offset > kControlPort) return;
  auto value = static_cast<uint8_t>(data[0]);
  std::lock_guard lock(mutex_);
  const uint64_t now = timers_.clock().now_ns();
  if (offset == kControlPort) {
    write_control(value, now);
  } else {
    write_count(channels_[offset], value, now);
  }
  if (offset == 0 || offset == kControlPort) reschedule(now);
}

void Pit8254::write_control(uint8_t value, uint64_t now) {
  const unsigned select = value >> 6;
  auto latch_count = [&](Channel& channel) {
    if (channel.count_latched) return;  // a second latch is ignored until the first is read
    channel.latched_count = current_count(channel, now);
    channel.count_latched = true;
    channel.read_high_next = false;
  };
  if (select == 3) {
    // Read-back command: bit 5 low latches counts, bit 4 low latches status, bits 1-3 select.
    for (unsigned index = 0; index < 3; ++index) {
      if (!(value & (2u << index))) continue;
      Channel& channel = channels_[index];
      if (!(value & 0x20)) latch_count(channel);
      if (!(value & 0x10) && !channel.status_latched) {
        channel.latched_status = status(channel, now);
        channel.status_latched = true;
      }
    }
    return;
  }
  Channel& channel = channels_[select];
  const uint8_t access = (value >> 4) & 3;
  if (access == 0) {
    latch_count(channel);
    return;
  }
  // A control word resets the counter's logic and sets OUT to its initial state.
  uint8_t mode = (value >> 1) & 7;
  if (mode > 5) mode -= 4;  // modes 6 and 7 are aliases of 2 and 3
  const bool gate = channel.gate;
  channel = Channel{};
  channel.gate = gate;
  channel.mode = mode;
  channel.access = access;
  channel.bcd = (value & 1) != 0;
}

void Pit8254::write_count(Channel& channel, uint8_t value, uint64_t now) {
  switch (channel.access) {
    case 1: load_count(channel, value, now); return;
    case 2: load_count(channel, static_cast<uint32_t>(value) << 8, now); return;
    default:
      if (!channel.write_high_next) {
        channel.pending_low = value;
        channel.write_high_next = true;
        // Mode 0: writing the first byte stops the count and drives OUT low.
        if (channel.mode == 0) {
          channel.loaded = false;
          channel.running = false;
        }
        return;
      }
      channel.write_high_next = false;
      load_count(channel, channel.pending_low | (static_cast<uint32_t>(value) << 8), now);
  }
}

void Pit8254::load_count(Channel& channel, uint32_t raw, uint64_t now) {
  uint32_t count = channel.bcd ? decode_bcd(raw) : raw;
  // The largest count is written as 0 (2^16 binary, 10^4 BCD).
  if (count == 0) count = channel.bcd ? 10000 : 0x10000;
  if (channel.mode == 2 && count == 1 && log_limiter_.allow()) {
    log_warn("pit8254: guest loaded the illegal count 1 in mode 2");
  }
  channel.count = count;
  channel.loaded = true;
  channel.base_elapsed = 0;
  channel.start_ns = now;
  if (gate_triggered_mode(channel.mode)) {
    channel.triggered = false;
    channel.running = false;
  } else {
    channel.running = channel.gate;
  }
}

uint8_t Pit8254::read_channel(Channel& channel, uint64_t now) {
  if (channel.status_latched) {
    channel.status_latched = false;
    return channel.latched_status;
  }
  const uint16_t value =
      channel.count_latched ? channel.latched_count : current_count(channel, now);
  bool high = channel.access == 2;
  if (channel.access == 3) {
    high = channel.read_high_next;
    channel.read_high_next = !channel.read_high_next;
  }
  // A latched count is released once every byte of it was read.
  if (channel.count_latched && (channel.access != 3 || high)) channel.count_latched = false;
  return static_cast<uint8_t>(high ? value >> 8 : value & 0xff);
}

void Pit8254::set_gate(Channel& channel, bool level, uint64_t now) {
  if (level == channel.gate) return;
  channel.gate = level;
  if (!channel.loaded) return;
  switch (channel.mode) {
    case 0:
    case 4:
      // GATE low suspends counting; high resumes it.
      if (!level) {
        channel.base_elapsed = elapsed(channel, now);
        channel.running = false;
      } else {
        channel.start_ns = now;
        channel.running = true;
      }
      break;
    case 1:
    case 5:
      // A rising GATE edge (re)starts the count.
      if (level) {
        channel.triggered = true;
        channel.running = true;
        channel.base_elapsed = 0;
        channel.start_ns = now;
      }
      break;
    default:
      // Modes 2 and 3: GATE low stops counting with OUT high; a rising edge reloads.
      channel.base_elapsed = 0;
      channel.start_ns = now;
      channel.running = level;
      break;
  }
}

void Pit8254::set_channel2_gate(bool level) {
  std::lock_guard lock(mutex_);
  set_gate(channels_[2], level, timers_.clock().now_ns());
}

bool Pit8254::channel2_gate() const {
  std::lock_guard lock(mutex_);
  return channels_[2].gate;
}

bool Pit8254::channel2_output() const {
  std::lock_guard lock(mutex_);
  return output(channels_[2], timers_.clock().now_ns());
}

void Pit8254::set_irq_level(bool level) {
  if (level == irq_level_) return;
  irq_level_ = level;
  irq0_.set_level(level);
}

void Pit8254::reschedule(uint64_t now) {
  Channel& channel = channels_[0];
  timer_.cancel();
  channel.next_event_tick = 0;
  const uint64_t n = channel.count;
  const uint64_t d = elapsed(channel, now);
  uint64_t target = 0;
  bool level = output(channel, now);
  if (channel.loaded && channel.running) {
    if (channel.mode <= 1) {
      if (d < n) target = n;
    } else if (periodic_mode(channel.mode)) {
      level = true;  // the period's low phase is delivered as a pulse
      target = (d / n + 1) * n;
    } else if (strobe_mode(channel.mode)) {
      level = true;
      if (d < n) target = n;
    }
  }
  set_irq_level(level);
  if (target == 0) return;
  channel.next_event_tick = target;
  uint64_t deadline = channel.start_ns + ticks_to_ns(target - channel.base_elapsed, kFrequencyHz);
  if (periodic_mode(channel.mode)) deadline = std::max(deadline, now + kMinimumPeriodNs);
  timer_.arm_at(deadline);
}

void Pit8254::on_timer(uint64_t now) {
  std::lock_guard lock(mutex_);
  now = std::max(now, timers_.clock().now_ns());
  Channel& channel = channels_[0];
  if (channel.next_event_tick != 0 && elapsed(channel, now) >= channel.next_event_tick &&
      (periodic_mode(channel.mode) || strobe_mode(channel.mode))) {
    set_irq_level(false);
    set_irq_level(true);
  }
  reschedule(now);
}

void Pit8254::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  const uint64_t now = timers_.clock().now_ns();
  writer.begin_section("pit8254", kStateVersion);
  for (const Channel& c : channels_) {
    // Elapsed ticks, not clock readings, so the state moves to a host with another clock.
    writer.put(c.count, c.mode, c.access, c.bcd, c.gate, c.loaded, c.triggered, c.running,
               elapsed(c, now), c.write_high_next, c.pending_low, c.read_high_next, c.count_latched,
               c.latched_count, c.status_latched, c.latched_status);
  }
  writer.end_section();
}

Result<void> Pit8254::load(StateReader& reader) {
  auto version = reader.begin_section("pit8254");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("pit8254: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  const uint64_t now = timers_.clock().now_ns();
  std::array<Channel, 3> loaded{};
  for (Channel& c : loaded) {
    if (auto result =
            reader.get(c.count, c.mode, c.access, c.bcd, c.gate, c.loaded, c.triggered, c.running,
                       c.base_elapsed, c.write_high_next, c.pending_low, c.read_high_next,
                       c.count_latched, c.latched_count, c.status_latched, c.latched_status);
        !result) {
      return result;
    }
    if (c.mode > 5 || c.access < 1 || c.access > 3 || c.count == 0 ||
        c.count > (c.bcd ? 10000u : 0x10000u)) {
      return fail(ErrorCode::kCorrupt, "pit8254: saved channel mode, access or count is invalid");
    }
    c.start_ns = now;
  }
  channels_ = loaded;
  irq_level_ = false;
  reschedule(now);
  return reader.end_section();
}

}  // namespace lamina::hw
