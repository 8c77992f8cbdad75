#pragma once
// Test support for virtio-blk: the driver's side of a split virtqueue laid out in a real
// GuestMemory (virtio 1.2 section 2.7), a VirtioTransport that owns a real Virtqueue, and
// temporary image files.

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_order.h"
#include "base/guest_memory.h"
#include "storage/block_device.h"
#include "virtio/dma_memory.h"
#include "virtio/virtio_device.h"
#include "virtio/virtqueue.h"

namespace lamina::virtio::test {

// Descriptor flags and ring flags (section 2.7.5, 2.7.6, 2.7.8).
inline constexpr uint16_t kDescriptorNext = 1;
inline constexpr uint16_t kDescriptorWrite = 2;
inline constexpr uint16_t kDescriptorIndirect = 4;
inline constexpr uint16_t kAvailNoInterrupt = 1;
inline constexpr uint16_t kUsedNoNotify = 1;

class TempFolder {
 public:
  TempFolder() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "lamina-virtio-blk-XXXXXX").string();
    const char* made = ::mkdtemp(pattern.data());
    path_ = made != nullptr ? made : "/tmp";
  }
  ~TempFolder() {
    std::error_code ignored;
    if (path_ != "/tmp") std::filesystem::remove_all(path_, ignored);
  }
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// The device's view of the world: guest memory and queue 0, with signals and errors recorded.
class TestTransport final : public VirtioTransport {
 public:
  explicit TestTransport(const DmaMemory& memory) : memory_(memory) {}

  Result<void> create_queue(const VirtqueueLayout& layout, bool event_index = false,
                            bool indirect = true) {
    auto made = Virtqueue::create(memory_, layout, event_index, indirect);
    if (!made) return fail(made.error());
    queue_.emplace(std::move(*made));
    return {};
  }
  void drop_queue() { queue_.reset(); }

  const DmaMemory& memory() const override { return memory_; }
  Virtqueue* queue(uint16_t index) override {
    return index == 0 && queue_ ? &*queue_ : nullptr;
  }
  void signal_queue(uint16_t /*index*/) override { ++signals_; }
  void signal_config_change() override { ++config_changes_; }
  void device_error(std::string_view what) override {
    std::lock_guard lock(mutex_);
    errors_.emplace_back(what);
  }

  uint64_t signals() const { return signals_; }
  std::vector<std::string> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }

 private:
  const DmaMemory& memory_;
  std::optional<Virtqueue> queue_;
  std::atomic<uint64_t> signals_{0};
  std::atomic<uint64_t> config_changes_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> errors_;
};

// The driver side of one split virtqueue: writes descriptors and the available ring, reads the
// used ring. Descriptors are handed out round-robin (tests keep fewer than `size` in flight).
class SplitRingDriver {
 public:
  struct Part {
    uint64_t address = 0;
    uint32_t length = 0;
    bool writable = false;
  };

  SplitRingDriver(GuestMemory& memory, const VirtqueueLayout& layout)
      : memory_(memory), layout_(layout) {}

  void write_descriptor(uint16_t index, uint64_t address, uint32_t length, uint16_t flags,
                        uint16_t next) {
    std::byte* d = memory_.host_pointer(layout_.descriptor_table + 16ull * index, 16);
    store_le<uint64_t>(d, address);
    store_le<uint32_t>(d + 8, length);
    store_le<uint16_t>(d + 12, flags);
    store_le<uint16_t>(d + 14, next);
  }

  // Writes a chain of descriptors for `parts` without publishing it; returns the head.
  uint16_t add_chain(std::span<const Part> parts) {
    const uint16_t head = next_descriptor_;
    for (size_t i = 0; i < parts.size(); ++i) {
      const uint16_t index = next_descriptor_;
      next_descriptor_ = static_cast<uint16_t>((next_descriptor_ + 1) % layout_.size);
      const bool last = i + 1 == parts.size();
      const uint16_t flags = static_cast<uint16_t>((parts[i].writable ? kDescriptorWrite : 0) |
                                                   (last ? 0 : kDescriptorNext));
      write_descriptor(index, parts[i].address, parts[i].length, flags,
                       last ? 0 : next_descriptor_);
    }
    return head;
  }
  // Puts `head` in the next available ring slot and publishes the new index.
  void publish(uint16_t head) {
    store_le<uint16_t>(avail(4 + 2 * (avail_index_ % layout_.size)), head);
    ++avail_index_;
    std::atomic_thread_fence(std::memory_order_release);
    store_le<uint16_t>(avail(2), avail_index_);
  }
  uint16_t submit(std::span<const Part> parts) {
    const uint16_t head = add_chain(parts);
    publish(head);
    return head;
  }
  // Reserves `count` descriptors for hand-written chains; returns the first index.
  uint16_t reserve(uint16_t count) {
    const uint16_t first = next_descriptor_;
    next_descriptor_ = static_cast<uint16_t>((next_descriptor_ + count) % layout_.size);
    return first;
  }

  // Back to an empty ring (after the test zeroed the ring memory for a new device).
  void restart() {
    next_descriptor_ = 0;
    avail_index_ = 0;
  }

  void set_avail_flags(uint16_t flags) { store_le<uint16_t>(avail(0), flags); }
  uint16_t used_flags() const { return load_le<uint16_t>(used(0)); }
  uint16_t used_index() const { return load_le<uint16_t>(used(2)); }
  struct UsedEntry {
    uint32_t id;
    uint32_t length;
  };
  UsedEntry used_entry(uint16_t position) const {
    const std::byte* entry = used(4 + 8ull * (position % layout_.size));
    return {load_le<uint32_t>(entry), load_le<uint32_t>(entry + 4)};
  }
  uint16_t avail_index() const { return avail_index_; }

 private:
  std::byte* avail(uint64_t offset) const {
    return memory_.host_pointer(layout_.driver_area + offset, 2);
  }
  const std::byte* used(uint64_t offset) const {
    return memory_.host_pointer(layout_.device_area + offset, 2);
  }

  GuestMemory& memory_;
  VirtqueueLayout layout_;
  uint16_t next_descriptor_ = 0;
  uint16_t avail_index_ = 0;
};

// A deterministic pattern that differs per seed and offset, so misplaced data shows.
inline std::vector<std::byte> pattern_bytes(size_t length, uint64_t seed) {
  std::vector<std::byte> bytes(length);
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
  for (auto& byte : bytes) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    byte = static_cast<std::byte>(state >> 24);
  }
  return bytes;
}

}  // namespace lamina::virtio::test
