#pragma once
// Bus: an address space of non-overlapping ranges, each handled by a Device that sees offsets
// within its range only. One class serves both the 16-bit port-I/O space and the MMIO space.
//
// An access must lie entirely inside one range to reach a device; anything else (a hole, or an
// access straddling a range's end) is unmapped: reads return all ones, writes are dropped, and
// both are counted.
//
// Thread-safety: lookups take a shared lock and release it before calling the device, so a
// device may map or unmap ranges from inside an access (a PCI command register write moving a
// BAR). map()/unmap() take the lock exclusively; that is rare (machine build, BAR programming,
// later hot-plug) while accesses are constant, which is why a reader-writer lock was chosen.
// Ownership: borrows the devices; a device must outlive its mappings and any access in flight,
// so devices are destroyed only after the vCPUs have stopped.

#include <atomic>
#include <cstdint>
#include <map>
#include <shared_mutex>
#include <span>
#include <string>

#include "base/error.h"
#include "hw/device.h"

namespace lamina::hw {

class Bus {
 public:
  // last_address bounds the space (0xffff for port I/O).
  explicit Bus(std::string name, uint64_t last_address = UINT64_MAX)
      : name_(std::move(name)), last_address_(last_address) {}
  Bus(const Bus&) = delete;
  Bus& operator=(const Bus&) = delete;

  // Maps [base, base + size) to device. Fails with kInvalidArgument on a zero size, a range that
  // wraps or passes last_address, or an overlap with an existing range (naming both devices).
  [[nodiscard]] Result<void> map(uint64_t base, uint64_t size, Device& device);
  // Removes the range that starts exactly at base; kNotFound when there is none.
  [[nodiscard]] Result<void> unmap(uint64_t base);

  // Dispatches an access; returns false when it hit no device (and was handled as unmapped).
  bool read(uint64_t address, std::span<std::byte> data);
  bool write(uint64_t address, std::span<const std::byte> data);

  // The device whose range holds address, or nullptr.
  Device* find(uint64_t address) const;

  uint64_t unmapped_reads() const { return unmapped_reads_.load(std::memory_order_relaxed); }
  uint64_t unmapped_writes() const { return unmapped_writes_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }

 private:
  struct Range {
    uint64_t last;  // inclusive, so a range may end at UINT64_MAX
    Device* device;
  };
  // The device and offset for an access of size bytes at address, when it fits one range.
  Device* lookup(uint64_t address, uint64_t size, uint64_t& offset) const;

  std::string name_;
  uint64_t last_address_;
  mutable std::shared_mutex mutex_;
  std::map<uint64_t, Range> ranges_;  // keyed by base
  std::atomic<uint64_t> unmapped_reads_{0};
  std::atomic<uint64_t> unmapped_writes_{0};
};

}  // namespace lamina::hw
