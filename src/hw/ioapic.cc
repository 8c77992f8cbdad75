#include "hw/ioapic.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint64_t kSelectOffset = 0x00;
constexpr uint64_t kWindowOffset = 0x10;
constexpr uint64_t kEoiOffset = 0x40;

constexpr uint8_t kIdRegister = 0x00, kVersionRegister = 0x01, kArbitrationRegister = 0x02,
                  kRedirectionBase = 0x10;
// Version 0x20, maximum redirection entry 23.
constexpr uint32_t kVersionValue = 0x00170020;

constexpr uint64_t kMasked = 1ull << 16;
constexpr uint64_t kLevelTriggered = 1ull << 15;
constexpr uint64_t kRemoteIrr = 1ull << 14;
// Writable: vector, delivery mode, destination mode, polarity, trigger, mask, destination.
constexpr uint64_t kWritable = 0xff000000000000ffull | 0x1af00;
constexpr uint32_t kStateVersion = 1;
}  // namespace

IoApic::IoApic(uint8_t id, InterruptRouter& router) : router_(router), id_(id & 0x0f) {
  for (unsigned pin = 0; pin < kPins; ++pin) {
    inputs_[pin].ioapic_ = this;
    inputs_[pin].pin_ = pin;
    entries_[pin] = kMasked;  // reset: every pin masked
  }
}

void IoApic::deliver(unsigned pin) {
  const uint64_t entry = entries_[pin];
  InterruptMessage message;
  message.vector = static_cast<uint8_t>(entry & 0xff);
  message.mode = static_cast<DeliveryMode>((entry >> 8) & 7);
  message.logical = (entry >> 11) & 1;
  message.destination = static_cast<uint32_t>(entry >> 56);
  message.level_triggered = (entry & kLevelTriggered) != 0;
  if (message.mode == DeliveryMode::kInit || message.mode == DeliveryMode::kStartup ||
      static_cast<unsigned>(message.mode) == 3) {
    if (log_limiter_.allow()) {
      log_warn("ioapic: pin {} uses delivery mode {}, which an IOAPIC cannot send", pin,
               static_cast<unsigned>(message.mode));
    }
    return;
  }
  // Only fixed and lowest-priority level interrupts wait for an EOI (data sheet 3.2.4).
  if (message.level_triggered &&
      (message.mode == DeliveryMode::kFixed || message.mode == DeliveryMode::kLowestPriority)) {
    entries_[pin] |= kRemoteIrr;
  }
  router_.deliver(message);
}

void IoApic::service_level(unsigned pin) {
  const uint64_t entry = entries_[pin];
  if ((entry & kLevelTriggered) && !(entry & kMasked) && !(entry & kRemoteIrr) &&
      (levels_ >> pin) & 1) {
    deliver(pin);
  }
}

void IoApic::set_irq(unsigned pin, bool level) {
  if (pin >= kPins) return;
  std::lock_guard lock(mutex_);
  const bool was = (levels_ >> pin) & 1;
  levels_ = level ? (levels_ | (1u << pin)) : (levels_ & ~(1u << pin));
  const uint64_t entry = entries_[pin];
  if (entry & kLevelTriggered) {
    service_level(pin);
  } else if (level && !was && !(entry & kMasked)) {
    deliver(pin);
  }
}

void IoApic::end_of_interrupt(uint8_t vector) {
  std::lock_guard lock(mutex_);
  for (unsigned pin = 0; pin < kPins; ++pin) {
    uint64_t& entry = entries_[pin];
    if ((entry & kRemoteIrr) && (entry & 0xff) == vector) {
      entry &= ~kRemoteIrr;
      service_level(pin);  // still asserted: the device wants service again
    }
  }
}

uint32_t IoApic::read_register(uint8_t index) const {
  switch (index) {
    case kIdRegister: return static_cast<uint32_t>(id_) << 24;
    case kVersionRegister: return kVersionValue;
    case kArbitrationRegister: return static_cast<uint32_t>(id_) << 24;
  }
  if (index >= kRedirectionBase && index < kRedirectionBase + 2 * kPins) {
    const uint64_t entry = entries_[(index - kRedirectionBase) / 2];
    return static_cast<uint32_t>((index & 1) ? entry >> 32 : entry);
  }
  return 0xffffffff;
}

void IoApic::write_register(uint8_t index, uint32_t value) {
  if (index == kIdRegister) {
    id_ = (value >> 24) & 0x0f;
    return;
  }
  if (index < kRedirectionBase || index >= kRedirectionBase + 2 * kPins) {
    if (log_limiter_.allow()) log_warn("ioapic: write to read-only register {:#x} ignored", index);
    return;
  }
  const unsigned pin = (index - kRedirectionBase) / 2;
  uint64_t& entry = entries_[pin];
  const uint64_t preserved = entry & ~kWritable;  // delivery status and Remote IRR
  uint64_t updated = (index & 1) ? ((static_cast<uint64_t>(value) << 32) | (entry & 0xffffffff))
                                 : ((entry & 0xffffffff00000000ull) | value);
  updated = (updated & kWritable) | preserved;
  // Remote IRR is meaningless for an edge-triggered pin; clear it so a later switch back to
  // level does not find a stale one.
  if (!(updated & kLevelTriggered)) updated &= ~kRemoteIrr;
  entry = updated;
  service_level(pin);
}

void IoApic::read(uint64_t offset, std::span<std::byte> data) {
  uint64_t value = ~0ull;
  {
    std::lock_guard lock(mutex_);
    if (offset == kSelectOffset) {
      value = select_;
    } else if (offset == kWindowOffset) {
      value = read_register(select_);
    }
  }
  store_le_sized(data, data.size() > 4 ? (value | 0xffffffff00000000ull) : value);
}

void IoApic::write(uint64_t offset, std::span<const std::byte> data) {
  if (data.empty()) return;
  const auto value =
      static_cast<uint32_t>(load_le_sized(data.first(std::min<size_t>(data.size(), 4))));
  if (offset == kEoiOffset) {
    end_of_interrupt(static_cast<uint8_t>(value));
    return;
  }
  std::lock_guard lock(mutex_);
  if (offset == kSelectOffset) {
    select_ = static_cast<uint8_t>(value);
  } else if (offset == kWindowOffset) {
    write_register(select_, value);
  }
}

uint64_t IoApic::redirection(unsigned pin) const {
  std::lock_guard lock(mutex_);
  return entries_[pin % kPins];
}

void IoApic::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("ioapic", kStateVersion);
  writer.put(id_, select_, levels_);
  for (uint64_t entry : entries_) writer.put(entry);
  writer.end_section();
}

Result<void> IoApic::load(StateReader& reader) {
  auto version = reader.begin_section("ioapic");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("ioapic: saved state version {} is not supported", *version));
  }
  std::lock_guard lock(mutex_);
  uint8_t id = 0, select = 0;
  uint32_t levels = 0;
  std::array<uint64_t, kPins> entries{};
  if (auto result = reader.get(id, select, levels); !result) return result;
  for (uint64_t& entry : entries) {
    if (auto result = reader.get(entry); !result) return result;
    entry &= kWritable | kRemoteIrr;
  }
  id_ = id & 0x0f;
  select_ = select;
  levels_ = levels & ((1u << kPins) - 1);
  entries_ = entries;
  return reader.end_section();
}

}  // namespace lamina::hw
