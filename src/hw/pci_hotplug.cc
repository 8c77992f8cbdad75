#include "hw/pci_hotplug.h"

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint32_t kStateVersion = 1;
uint32_t bit(unsigned slot) { return slot < 32 ? uint32_t{1} << slot : 0; }
}  // namespace

PciHotplug::PciHotplug(uint32_t slots, std::function<void()> notify_guest)
    : slots_(slots), notify_guest_(std::move(notify_guest)) {}

void PciHotplug::read(uint64_t offset, std::span<std::byte> data) {
  uint32_t value = 0;
  // Only whole, aligned registers: a byte read must not clear the other 24 bits it skipped.
  if (data.size() == 4 && (offset & 3) == 0) {
    std::lock_guard lock(mutex_);
    switch (offset) {
      case kUp: value = std::exchange(up_, 0); break;
      case kDown: value = std::exchange(down_, 0); break;
      case kSlots: value = slots_; break;
      default: break;
    }
  }
  store_le_sized(data, value);
}

void PciHotplug::write(uint64_t offset, std::span<const std::byte> data) {
  if (offset != kEject || data.size() != 4) return;
  const auto value = static_cast<uint32_t>(load_le_sized(data));
  {
    std::lock_guard lock(mutex_);
    const uint32_t accepted = value & removal_pending_;
    if (value & ~accepted) {
      ++ignored_ejects_;
      if (log_limiter_.allow()) {
        log_warn("pci-hotplug: guest ejected slots {:#x} that had no removal pending; ignored",
                 value & ~accepted);
      }
    }
    if (accepted == 0) return;
    removal_pending_ &= ~accepted;
    ejected_ |= accepted;
  }
  ejected_changed_.notify_all();
}

void PciHotplug::announce_insert(unsigned slot) {
  {
    std::lock_guard lock(mutex_);
    up_ |= bit(slot) & slots_;
    // A slot refilled before the guest read DOWN is an insert now, not a removal.
    down_ &= ~bit(slot);
    ejected_ &= ~bit(slot);
  }
  if (notify_guest_) notify_guest_();
}

void PciHotplug::request_removal(unsigned slot) {
  {
    std::lock_guard lock(mutex_);
    down_ |= bit(slot) & slots_;
    removal_pending_ |= bit(slot) & slots_;
    up_ &= ~bit(slot);
    ejected_ &= ~bit(slot);
  }
  if (notify_guest_) notify_guest_();
}

bool PciHotplug::wait_for_eject(unsigned slot, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ejected_changed_.wait_for(lock, timeout, [&] { return (ejected_ & bit(slot)) || aborted_; });
  const bool ejected = (ejected_ & bit(slot)) != 0;
  ejected_ &= ~bit(slot);
  return ejected;
}

bool PciHotplug::cancel_removal(unsigned slot) {
  std::lock_guard lock(mutex_);
  const bool pending = (removal_pending_ & bit(slot)) != 0;
  removal_pending_ &= ~bit(slot);
  down_ &= ~bit(slot);
  ejected_ &= ~bit(slot);
  return pending;
}

void PciHotplug::abort_waits() {
  {
    std::lock_guard lock(mutex_);
    aborted_ = true;
  }
  ejected_changed_.notify_all();
}

uint64_t PciHotplug::ignored_ejects() const {
  std::lock_guard lock(mutex_);
  return ignored_ejects_;
}

void PciHotplug::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("pci-hotplug", kStateVersion);
  writer.put(slots_, up_, down_, removal_pending_);
  writer.end_section();
}

Result<void> PciHotplug::load(StateReader& reader) {
  auto version = reader.begin_section("pci-hotplug");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("pci-hotplug: saved state version {} is not supported", *version));
  }
  uint32_t slots = 0;
  std::lock_guard lock(mutex_);
  if (auto result = reader.get(slots, up_, down_, removal_pending_); !result) return result;
  if (slots != slots_) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("pci-hotplug: saved slots {:#x} differ from this machine's {:#x}",
                            slots, slots_));
  }
  up_ &= slots_;
  down_ &= slots_;
  removal_pending_ &= slots_;
  ejected_ = 0;
  return reader.end_section();
}

}  // namespace lamina::hw
