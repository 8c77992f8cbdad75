#include "hw/i8042.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
enum Window : unsigned { kData = 0, kCommand = 1 };

constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystem = 0x04;
constexpr uint8_t kStatusCommand = 0x08;
constexpr uint8_t kStatusUnlocked = 0x10;
constexpr uint8_t kStatusAuxData = 0x20;

constexpr uint8_t kCommandKeyboardInterrupt = 0x01;
constexpr uint8_t kCommandAuxInterrupt = 0x02;
constexpr uint8_t kCommandSystem = 0x04;
constexpr uint8_t kCommandKeyboardDisabled = 0x10;
constexpr uint8_t kCommandAuxDisabled = 0x20;
constexpr uint8_t kCommandTranslate = 0x40;

constexpr uint8_t kOutputReset = 0x01;  // active low: 0 holds the CPU in reset
constexpr uint8_t kOutputA20 = 0x02;

constexpr uint8_t kAck = 0xfa;
constexpr uint8_t kResend = 0xfe;
constexpr uint16_t kAuxFlag = 0x100;
constexpr size_t kOutputLimit = 16;
constexpr uint32_t kStateVersion = 1;
// Host input waiting for the guest beyond this is dropped (a guest that stopped reading).
constexpr size_t kHostInputLimit = 512;

// Scan code set 2 of each set 1 make code 0x00-0x58 (the inverse of the 8042's translation,
// IBM PS/2 technical reference, keyboard scan code tables); 0: no such key.
constexpr uint8_t kSet1ToSet2[0x59] = {
    0x00, 0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, 0x3d, 0x3e, 0x46, 0x45, 0x4e, 0x55, 0x66,
    0x0d, 0x15, 0x1d, 0x24, 0x2d, 0x2c, 0x35, 0x3c, 0x43, 0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14,
    0x1c, 0x1b, 0x23, 0x2b, 0x34, 0x33, 0x3b, 0x42, 0x4b, 0x4c, 0x52, 0x0e, 0x12, 0x5d, 0x1a,
    0x22, 0x21, 0x2a, 0x32, 0x31, 0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c, 0x11, 0x29, 0x58, 0x05,
    0x06, 0x04, 0x0c, 0x03, 0x0b, 0x83, 0x0a, 0x01, 0x09, 0x77, 0x7e, 0x6c, 0x75, 0x7d, 0x7b,
    0x6b, 0x73, 0x74, 0x79, 0x69, 0x72, 0x7a, 0x70, 0x71, 0x00, 0x00, 0x00, 0x78, 0x07,
};
}  // namespace

I8042::I8042(IrqLine& keyboard_irq, IrqLine& mouse_irq, std::function<void()> reset_request,
             std::function<void(bool enabled)> a20_changed)
    : keyboard_irq_(keyboard_irq),
      mouse_irq_(mouse_irq),
      reset_request_(std::move(reset_request)),
      a20_changed_(std::move(a20_changed)),
      data_window_(*this, kData, "i8042-data"),
      command_window_(*this, kCommand, "i8042-command") {}

bool I8042::a20_enabled() const {
  std::lock_guard lock(mutex_);
  return (output_port_ & kOutputA20) != 0;
}

void I8042::queue(uint8_t value, bool aux) {
  // A guest that never reads cannot grow the queue without bound; extra bytes are lost, as
  // they would be on the wire.
  if (output_.size() >= kOutputLimit) return;
  output_.push_back(static_cast<uint16_t>(value | (aux ? kAuxFlag : 0)));
}

void I8042::queue_host_input(uint16_t value) {
  if (host_input_.size() < kHostInputLimit) host_input_.push_back(value);
}

void I8042::feed_host_input() {
  if (output_.empty() && !host_input_.empty()) {
    output_.push_back(host_input_.front());
    host_input_.pop_front();
  }
}

void I8042::keyboard_input(std::span<const uint8_t> set1_bytes) {
  std::lock_guard lock(mutex_);
  if (!keyboard_scanning_) return;
  const bool translated = (command_byte_ & kCommandTranslate) != 0;
  for (const uint8_t byte : set1_bytes) {
    if (translated || byte == 0xe0) {
      queue_host_input(byte);
      continue;
    }
    // Set 2: a release is 0xF0 before the make code (after any 0xE0 prefix).
    const uint8_t make = byte & 0x7f;
    const uint8_t code = make < sizeof(kSet1ToSet2) ? kSet1ToSet2[make] : 0;
    if (code == 0) continue;
    if (byte & 0x80) queue_host_input(0xf0);
    queue_host_input(code);
  }
  feed_host_input();
  update_irqs(false);
}

void I8042::mouse_input(int dx, int dy, uint8_t buttons) {
  std::lock_guard lock(mutex_);
  if (!mouse_reporting_) return;
  // Standard packet: buttons, bit 3 always set, the 9th (sign) bits of X and Y; then X and Y.
  dx = std::clamp(dx, -255, 255);
  dy = std::clamp(dy, -255, 255);
  const auto head = static_cast<uint8_t>((buttons & 7) | 0x08 | (dx < 0 ? 0x10 : 0) |
                                         (dy < 0 ? 0x20 : 0));
  queue_host_input(head | kAuxFlag);
  queue_host_input(static_cast<uint8_t>(dx) | kAuxFlag);
  queue_host_input(static_cast<uint8_t>(dy) | kAuxFlag);
  feed_host_input();
  update_irqs(false);
}

uint8_t I8042::status() const {
  uint8_t value = kStatusUnlocked;
  if (!output_.empty()) {
    value |= kStatusOutputFull;
    if (output_.front() & kAuxFlag) value |= kStatusAuxData;
  }
  if (command_byte_ & kCommandSystem) value |= kStatusSystem;
  if (last_write_was_command_) value |= kStatusCommand;
  return value;
}

void I8042::write_output_port(uint8_t value, Effects& effects) {
  const bool a20_before = (output_port_ & kOutputA20) != 0;
  output_port_ = value | kOutputReset;
  if (!(value & kOutputReset)) effects.reset = true;
  const bool a20 = (value & kOutputA20) != 0;
  if (a20 != a20_before) {
    effects.a20_changed = true;
    effects.a20 = a20;
  }
}

void I8042::controller_command(uint8_t command, Effects& effects) {
  if (command >= 0xf0) {
    // Pulse output port lines 0-3: a 0 bit pulses that line; line 0 is CPU reset.
    if (!(command & 0x01)) effects.reset = true;
    return;
  }
  if (command >= 0x20 && command <= 0x3f) {
    // Read controller RAM; byte 0 is the command byte, the rest reads as 0.
    queue(command == 0x20 ? command_byte_ : 0, false);
    return;
  }
  if (command >= 0x60 && command <= 0x7f) {
    pending_command_ = command;
    return;
  }
  switch (command) {
    case 0xa7: command_byte_ |= kCommandAuxDisabled; return;
    case 0xa8: command_byte_ &= ~kCommandAuxDisabled; return;
    case 0xa9: queue(0x00, false); return;  // aux interface test: no error
    case 0xaa:                              // controller self-test
      command_byte_ |= kCommandSystem;
      queue(0x55, false);
      return;
    case 0xab: queue(0x00, false); return;  // keyboard interface test: no error
    case 0xad: command_byte_ |= kCommandKeyboardDisabled; return;
    case 0xae: command_byte_ &= ~kCommandKeyboardDisabled; return;
    case 0xc0: queue(0x80, false); return;  // input port: keyboard not inhibited
    case 0xd0: queue(output_port_, false); return;
    case 0xd1:
    case 0xd2:
    case 0xd3:
    case 0xd4: pending_command_ = command; return;
    case 0xdd: write_output_port(output_port_ & ~kOutputA20, effects); return;
    case 0xdf: write_output_port(output_port_ | kOutputA20, effects); return;
    default:
      if (log_limiter_.allow()) log_warn("i8042: unknown controller command {:#04x}", command);
      return;
  }
}

void I8042::data_write(uint8_t value, Effects& effects) {
  const uint8_t command = pending_command_;
  pending_command_ = 0;
  if (command == 0) {
    keyboard_command(value);
    return;
  }
  if (command == 0x60) {
    command_byte_ = value;
  } else if (command == 0xd1) {
    write_output_port(value, effects);
  } else if (command == 0xd2) {
    queue(value, false);
  } else if (command == 0xd3) {
    queue(value, true);
  } else if (command == 0xd4) {
    mouse_command(value);
  }
  // 0x61-0x7f: writes to controller RAM beyond the command byte are accepted and dropped.
}

void I8042::keyboard_command(uint8_t value) {
  if (keyboard_pending_ != 0) {
    const uint8_t command = keyboard_pending_;
    keyboard_pending_ = 0;
    queue(kAck, false);
    if (command == 0xf0) {
      if (value == 0) {
        queue(scan_set_, false);
      } else if (value <= 3) {
        scan_set_ = value;
      }
    }
    return;  // 0xed LEDs and 0xf3 typematic rate need no further action
  }
  switch (value) {
    case 0xff:  // reset: ACK, then the basic assurance test passed
      keyboard_scanning_ = true;
      scan_set_ = 2;
      queue(kAck, false);
      queue(0xaa, false);
      return;
    case 0xf2: {  // identify: an MF2 keyboard, whose second ID byte the controller translates
      queue(kAck, false);
      queue(0xab, false);
      queue((command_byte_ & kCommandTranslate) ? 0x41 : 0x83, false);
      return;
    }
    case 0xed:
    case 0xf3:
    case 0xf0:
      keyboard_pending_ = value;
      queue(kAck, false);
      return;
    case 0xee: queue(0xee, false); return;  // echo
    case 0xf4:
      keyboard_scanning_ = true;
      queue(kAck, false);
      return;
    case 0xf5:
      keyboard_scanning_ = false;
      queue(kAck, false);
      return;
    case 0xf6:
      keyboard_scanning_ = true;
      queue(kAck, false);
      return;
    default: queue(value >= 0xf7 ? kAck : kResend, false); return;
  }
}

void I8042::mouse_command(uint8_t value) {
  if (mouse_pending_ != 0) {
    if (mouse_pending_ == 0xf3) mouse_rate_ = value;
    if (mouse_pending_ == 0xe8) mouse_resolution_ = value & 3;
    mouse_pending_ = 0;
    queue(kAck, true);
    return;
  }
  switch (value) {
    case 0xff:  // reset: ACK, self-test passed, device ID 0 (standard PS/2 mouse)
      mouse_reporting_ = false;
      mouse_rate_ = 100;
      mouse_resolution_ = 2;
      mouse_scaling_ = false;
      queue(kAck, true);
      queue(0xaa, true);
      queue(0x00, true);
      return;
    case 0xf2:
      queue(kAck, true);
      queue(0x00, true);
      return;
    case 0xf3:
    case 0xe8:
      mouse_pending_ = value;
      queue(kAck, true);
      return;
    case 0xe9: {  // status request: flags, resolution, sample rate
      uint8_t flags =
          static_cast<uint8_t>((mouse_reporting_ ? 0x20 : 0) | (mouse_scaling_ ? 0x10 : 0));
      queue(kAck, true);
      queue(flags, true);
      queue(mouse_resolution_, true);
      queue(mouse_rate_, true);
      return;
    }
    case 0xeb:
      queue(kAck, true);
      queue(0x08, true);
      queue(0, true);
      queue(0, true);
      return;
    case 0xe6:
      mouse_scaling_ = false;
      queue(kAck, true);
      return;
    case 0xe7:
      mouse_scaling_ = true;
      queue(kAck, true);
      return;
    case 0xf4:
      mouse_reporting_ = true;
      queue(kAck, true);
      return;
    case 0xf5:
      mouse_reporting_ = false;
      queue(kAck, true);
      return;
    case 0xf6:
      mouse_reporting_ = false;
      mouse_rate_ = 100;
      mouse_resolution_ = 2;
      queue(kAck, true);
      return;
    case 0xea:
    case 0xec:
    case 0xee:
    case 0xf0: queue(kAck, true); return;
    default: queue(kResend, true); return;
  }
}

void I8042::update_irqs(bool pulse_low) {
  // Each byte reaching the output buffer is a new edge: after a read the line drops before the
  // next byte raises it again, as on the real controller.
  bool keyboard = false;
  bool mouse = false;
  if (!output_.empty()) {
    const bool aux = (output_.front() & kAuxFlag) != 0;
    keyboard = !aux && (command_byte_ & kCommandKeyboardInterrupt);
    mouse = aux && (command_byte_ & kCommandAuxInterrupt);
  }
  if (pulse_low) {
    if (keyboard_level_) keyboard_irq_.set_level(false);
    if (mouse_level_) mouse_irq_.set_level(false);
    keyboard_level_ = mouse_level_ = false;
  }
  if (keyboard != keyboard_level_) {
    keyboard_level_ = keyboard;
    keyboard_irq_.set_level(keyboard);
  }
  if (mouse != mouse_level_) {
    mouse_level_ = mouse;
    mouse_irq_.set_level(mouse);
  }
}

void I8042::apply(const Effects& effects) {
  if (effects.a20_changed && a20_changed_) a20_changed_(effects.a20);
  if (effects.reset && reset_request_) reset_request_();
}

void I8042::window_read(unsigned window, uint64_t offset, std::span<std::byte> data) {
  uint8_t value = 0xff;
  if (offset == 0 && !data.empty()) {
    std::lock_guard lock(mutex_);
    if (window == kCommand) {
      value = status();
    } else {
      bool popped = false;
      if (!output_.empty()) {
        value = static_cast<uint8_t>(output_.front());
        output_.pop_front();
        feed_host_input();
        popped = true;
      } else {
        value = 0x00;  // reading an empty buffer repeats stale data; 0 is as good
      }
      update_irqs(popped);
    }
  }
  store_le_sized(data, 0xffffffffffffff00ull | value);
}

void I8042::window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) {
  if (offset != 0 || data.empty()) return;
  const auto value = static_cast<uint8_t>(data[0]);
  Effects effects;
  {
    std::lock_guard lock(mutex_);
    last_write_was_command_ = window == kCommand;
    if (window == kCommand) {
      controller_command(value, effects);
    } else {
      data_write(value, effects);
    }
    update_irqs(false);
  }
  apply(effects);
}

void I8042::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("i8042", kStateVersion);
  writer.put(static_cast<uint8_t>(output_.size()));
  for (uint16_t entry : output_) writer.put(entry);
  writer.put(command_byte_, output_port_, pending_command_, last_write_was_command_,
             keyboard_pending_, keyboard_scanning_, scan_set_, mouse_pending_, mouse_reporting_,
             mouse_rate_, mouse_resolution_, mouse_scaling_);
  writer.end_section();
}

Result<void> I8042::load(StateReader& reader) {
  auto version = reader.begin_section("i8042");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("i8042: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  uint8_t count = 0;
  if (auto result = reader.get(count); !result) return result;
  if (count > kOutputLimit) {
    return fail(ErrorCode::kCorrupt, fmt::format("i8042: saved output queue holds {}", count));
  }
  std::deque<uint16_t> output;
  for (uint8_t i = 0; i < count; ++i) {
    uint16_t entry = 0;
    if (auto result = reader.get(entry); !result) return result;
    output.push_back(entry & 0x1ff);
  }
  if (auto result =
          reader.get(command_byte_, output_port_, pending_command_, last_write_was_command_,
                     keyboard_pending_, keyboard_scanning_, scan_set_, mouse_pending_,
                     mouse_reporting_, mouse_rate_, mouse_resolution_, mouse_scaling_);
      !result) {
    return result;
  }
  output_ = std::move(output);
  output_port_ |= kOutputReset;
  if (scan_set_ < 1 || scan_set_ > 3) scan_set_ = 2;
  keyboard_level_ = mouse_level_ = false;
  update_irqs(false);
  return reader.end_section();
}

}  // namespace lamina::hw
