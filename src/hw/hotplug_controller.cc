#include "hw/hotplug_controller.h"

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint32_t kStateVersion = 1;
uint64_t bit(unsigned unit) { return unit < 64 ? uint64_t{1} << unit : 0; }
// The dword of a 64-bit register an aligned 32-bit access at `offset` touches.
uint64_t dword_mask(uint64_t offset) { return (offset & 4) ? 0xffffffff00000000ull : 0xffffffffull; }
}  // namespace

HotplugController::HotplugController(std::string name, uint64_t units, uint64_t present,
                                     std::function<void()> notify_guest)
    : name_(std::move(name)),
      units_(units),
      notify_guest_(std::move(notify_guest)),
      present_(present & units) {}

void HotplugController::read(uint64_t offset, std::span<std::byte> data) {
  uint64_t value = 0;
  // Only whole, aligned dwords: a byte read must not clear the bits it skipped.
  if (data.size() == 4 && (offset & 3) == 0 && offset < kSize) {
    const uint64_t mask = dword_mask(offset);
    std::lock_guard lock(mutex_);
    switch (offset & ~7ull) {
      case kUp:
        value = up_ & mask;
        up_ &= ~mask;
        break;
      case kDown:
        value = down_ & mask;
        down_ &= ~mask;
        break;
      case kUnits: value = units_ & mask; break;
      case kPresent: value = present_ & mask; break;
      default: break;
    }
    value >>= (offset & 4) * 8;
  }
  store_le_sized(data, value);
}

void HotplugController::write(uint64_t offset, std::span<const std::byte> data) {
  if ((offset & ~7ull) != kEject || (offset & 3) != 0 || data.size() != 4) return;
  const uint64_t value = load_le_sized(data) << ((offset & 4) * 8);
  {
    std::lock_guard lock(mutex_);
    const uint64_t accepted = value & removal_pending_;
    if (value & ~accepted) {
      ++ignored_ejects_;
      if (log_limiter_.allow()) {
        log_warn("{}: guest ejected units {:#x} that had no removal pending; ignored", name_,
                 value & ~accepted);
      }
    }
    if (accepted == 0) return;
    removal_pending_ &= ~accepted;
    present_ &= ~accepted;
    ejected_ |= accepted;
  }
  ejected_changed_.notify_all();
}

uint64_t HotplugController::present() const {
  std::lock_guard lock(mutex_);
  return present_;
}

void HotplugController::announce_insert(unsigned unit) {
  {
    std::lock_guard lock(mutex_);
    up_ |= bit(unit) & units_;
    present_ |= bit(unit) & units_;
    // A unit refilled before the guest read DOWN is an insert now, not a removal.
    down_ &= ~bit(unit);
    ejected_ &= ~bit(unit);
  }
  if (notify_guest_) notify_guest_();
}

void HotplugController::request_removal(unsigned unit) {
  {
    std::lock_guard lock(mutex_);
    down_ |= bit(unit) & units_;
    removal_pending_ |= bit(unit) & units_;
    up_ &= ~bit(unit);
    ejected_ &= ~bit(unit);
  }
  if (notify_guest_) notify_guest_();
}

bool HotplugController::wait_for_eject(unsigned unit, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  ejected_changed_.wait_for(lock, timeout, [&] { return (ejected_ & bit(unit)) || aborted_; });
  const bool ejected = (ejected_ & bit(unit)) != 0;
  ejected_ &= ~bit(unit);
  return ejected;
}

bool HotplugController::cancel_removal(unsigned unit) {
  std::lock_guard lock(mutex_);
  const bool pending = (removal_pending_ & bit(unit)) != 0;
  removal_pending_ &= ~bit(unit);
  down_ &= ~bit(unit);
  ejected_ &= ~bit(unit);
  return pending;
}

void HotplugController::abort_waits() {
  {
    std::lock_guard lock(mutex_);
    aborted_ = true;
  }
  ejected_changed_.notify_all();
}

uint64_t HotplugController::ignored_ejects() const {
  std::lock_guard lock(mutex_);
  return ignored_ejects_;
}

void HotplugController::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section(name_, kStateVersion);
  writer.put(units_, up_, down_, present_, removal_pending_);
  writer.end_section();
}

Result<void> HotplugController::load(StateReader& reader) {
  auto version = reader.begin_section(name_);
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: saved state version {} is not supported", name_, *version));
  }
  uint64_t units = 0;
  std::lock_guard lock(mutex_);
  if (auto result = reader.get(units, up_, down_, present_, removal_pending_); !result) {
    return result;
  }
  if (units != units_) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: saved units {:#x} differ from this machine's {:#x}", name_,
                            units, units_));
  }
  up_ &= units_;
  down_ &= units_;
  present_ &= units_;
  removal_pending_ &= units_;
  ejected_ = 0;
  return reader.end_section();
}

}  // namespace lamina::hw
