#include "storage/tracked_block_device.h"

namespace lamina::storage {

TrackedBlockDevice::TrackedBlockDevice(std::unique_ptr<BlockDevice> image)
    : image_(std::move(image)), dirty_(image_->size(), kChunkBytes) {}

Result<void> TrackedBlockDevice::read(uint64_t offset, std::span<std::byte> data) {
  std::lock_guard lock(mutex_);
  return image_->read(offset, data);
}

Result<void> TrackedBlockDevice::read_scattered(uint64_t offset, ScatterList buffers) {
  std::lock_guard lock(mutex_);
  return image_->read_scattered(offset, buffers);
}

// Marked after the write whether or not it succeeded: a failed write may have changed part of
// the range, and an extra chunk sent again costs little.
Result<void> TrackedBlockDevice::write(uint64_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  auto written = image_->write(offset, data);
  dirty_.mark(offset, data.size());
  return written;
}

Result<void> TrackedBlockDevice::flush() {
  std::lock_guard lock(mutex_);
  return image_->flush();
}

Result<void> TrackedBlockDevice::discard(uint64_t offset, uint64_t length) {
  std::lock_guard lock(mutex_);
  auto done = image_->discard(offset, length);
  dirty_.mark(offset, length);
  return done;
}

Result<void> TrackedBlockDevice::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  std::lock_guard lock(mutex_);
  auto done = image_->write_zeroes(offset, length, may_unmap);
  dirty_.mark(offset, length);
  return done;
}

Result<void> TrackedBlockDevice::set_write_lock(bool locked) {
  std::lock_guard lock(mutex_);
  return image_->set_write_lock(locked);
}

Result<BlockDevice::Extent> TrackedBlockDevice::map_extent(uint64_t offset, uint64_t max_length) {
  std::lock_guard lock(mutex_);
  return image_->map_extent(offset, max_length);
}

}  // namespace lamina::storage
