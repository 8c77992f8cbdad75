#include "hw/bus.h"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>

namespace lamina::hw {

Result<void> Bus::map(uint64_t base, uint64_t size, Device& device) {
  if (size == 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: cannot map {} at {:#x} with size 0", name_, device.name(), base));
  }
  if (base > last_address_ || size - 1 > last_address_ - base) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: {} at {:#x} size {:#x} runs past the end of the space ({:#x})",
                            name_, device.name(), base, size, last_address_));
  }
  uint64_t last = base + (size - 1);
  std::unique_lock lock(mutex_);
  // The first range starting after base, and the one before it, are the only candidates.
  auto next = ranges_.upper_bound(base);
  if (next != ranges_.end() && next->first <= last) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: {} at {:#x}-{:#x} overlaps {} at {:#x}", name_, device.name(),
                            base, last, next->second.device->name(), next->first));
  }
  if (next != ranges_.begin()) {
    auto previous = std::prev(next);
    if (previous->second.last >= base) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: {} at {:#x}-{:#x} overlaps {} at {:#x}-{:#x}", name_,
                              device.name(), base, last, previous->second.device->name(),
                              previous->first, previous->second.last));
    }
  }
  ranges_.emplace(base, Range{last, &device});
  return {};
}

Result<void> Bus::unmap(uint64_t base) {
  std::unique_lock lock(mutex_);
  if (ranges_.erase(base) == 0) {
    return fail(ErrorCode::kNotFound, fmt::format("{}: nothing is mapped at {:#x}", name_, base));
  }
  return {};
}

Device* Bus::lookup(uint64_t address, uint64_t size, uint64_t& offset) const {
  std::shared_lock lock(mutex_);
  auto next = ranges_.upper_bound(address);
  if (next == ranges_.begin()) return nullptr;
  auto range = std::prev(next);
  const uint64_t base = range->first;
  const uint64_t last = range->second.last;
  if (address > last) return nullptr;
  // The access must end inside the range too (size >= 1 is checked by the caller).
  if (size - 1 > last - address) return nullptr;
  offset = address - base;
  return range->second.device;
}

Device* Bus::find(uint64_t address) const {
  uint64_t offset = 0;
  return lookup(address, 1, offset);
}

bool Bus::read(uint64_t address, std::span<std::byte> data) {
  uint64_t offset = 0;
  Device* device = data.empty() ? nullptr : lookup(address, data.size(), offset);
  if (device == nullptr) {
    std::fill(data.begin(), data.end(), std::byte{0xff});
    unmapped_reads_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  device->read(offset, data);
  return true;
}

bool Bus::write(uint64_t address, std::span<const std::byte> data) {
  uint64_t offset = 0;
  Device* device = data.empty() ? nullptr : lookup(address, data.size(), offset);
  if (device == nullptr) {
    unmapped_writes_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  device->write(offset, data);
  return true;
}

}  // namespace lamina::hw
