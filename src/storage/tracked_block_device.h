#pragma once
// TrackedBlockDevice: a writable disk as its VM's worker uses it, with the two things live
// migration with `--storage copy` needs from it: every write, discard and write-zeroes marks the
// 64 KiB chunks it touches in a DirtyLog while tracking is on (block dirty tracking, so chunks
// the guest writes after they were copied are sent again), and every call is serialized, so the
// migration can read the image while the device's I/O thread keeps writing it.
//
// Ownership: owns the image it wraps. Thread-safety: every call from any thread (one mutex);
// start/stop/take_dirty from the migration's thread.

#include <memory>
#include <mutex>
#include <vector>

#include "base/dirty_log.h"
#include "storage/block_device.h"

namespace lamina::storage {

class TrackedBlockDevice final : public BlockDevice {
 public:
  static constexpr uint64_t kChunkBytes = 64 * 1024;

  explicit TrackedBlockDevice(std::unique_ptr<BlockDevice> image);

  uint64_t size() const override { return image_->size(); }
  bool read_only() const override { return image_->read_only(); }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override;
  Result<void> read_scattered(uint64_t offset, ScatterList buffers) override;
  Result<void> write(uint64_t offset, std::span<const std::byte> data) override;
  Result<void> flush() override;
  Result<void> discard(uint64_t offset, uint64_t length) override;
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  Result<void> set_write_lock(bool locked) override;
  Result<Extent> map_extent(uint64_t offset, uint64_t max_length) override;

  // Tracking on (nothing marked yet) and off.
  void start_tracking() { dirty_.start(); }
  void stop_tracking() { dirty_.stop(); }
  // The chunks written since start_tracking() or the last take: bit (chunk % 64) of word
  // (chunk / 64), chunk = offset / kChunkBytes.
  std::vector<uint64_t> take_dirty() { return dirty_.take(); }

 private:
  std::mutex mutex_;
  std::unique_ptr<BlockDevice> image_;
  DirtyLog dirty_;
};

}  // namespace lamina::storage
