#pragma once
// Test support for virtio-blk: a VirtioTransport that owns a real Virtqueue, temporary folders
// and data patterns. The driver's side of the ring is virtqueue_driver.h's TestDriver.

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

// Descriptor flags and ring flags (sections 2.7.5, 2.7.7, 2.7.8).
inline constexpr uint16_t kDescriptorNext = 1;
inline constexpr uint16_t kDescriptorWrite = 2;
inline constexpr uint16_t kDescriptorIndirect = 4;
inline constexpr uint16_t kAvailNoInterrupt = 1;
inline constexpr uint16_t kUsedNoNotify = 1;

class TempFolder {
 public:
  // In `base` (default: the temporary directory); /dev/shm suits tests whose many
  // write-through requests would otherwise wait for a disk's fdatasync each.
  explicit TempFolder(std::filesystem::path base = std::filesystem::temp_directory_path()) {
    std::string pattern = (base / "lamina-virtio-blk-XXXXXX").string();
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
