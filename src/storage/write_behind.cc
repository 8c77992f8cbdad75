#include "storage/write_behind.h"

#include <fcntl.h>

namespace lamina::storage {

namespace {

// Ranges are handed to the background thread in pieces of this size: large enough for few
// system calls, small enough that writeback follows the writer closely.
constexpr uint64_t kBatch = 8 << 20;

}  // namespace

WriteBehind::WriteBehind(int descriptor)
    : descriptor_(descriptor), thread_([this](const std::stop_token& stop) { run(stop); }) {}

void WriteBehind::add(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  std::lock_guard lock(mutex_);
  if (pending_length_ != 0 && offset != pending_offset_ + pending_length_) hand_off_locked();
  if (pending_length_ == 0) pending_offset_ = offset;
  pending_length_ += length;
  if (pending_length_ >= kBatch) hand_off_locked();
}

void WriteBehind::hand_off_locked() {
  if (pending_length_ == 0) return;
  ranges_.emplace_back(pending_offset_, pending_length_);
  pending_length_ = 0;
  changed_.notify_all();
}

void WriteBehind::drain() {
  std::unique_lock lock(mutex_);
  hand_off_locked();
  changed_.wait(lock, [&] { return ranges_.empty() && !busy_; });
}

void WriteBehind::run(const std::stop_token& stop) {
  std::unique_lock lock(mutex_);
  while (changed_.wait(lock, stop, [&] { return !ranges_.empty(); })) {
    auto [offset, length] = ranges_.front();
    ranges_.pop_front();
    busy_ = true;
    lock.unlock();
    // SYNC_FILE_RANGE_WRITE only starts the writeback; best effort (fdatasync follows).
    ::sync_file_range(descriptor_, static_cast<off_t>(offset), static_cast<off_t>(length),
                      SYNC_FILE_RANGE_WRITE);
    lock.lock();
    busy_ = false;
    changed_.notify_all();
  }
}

}  // namespace lamina::storage
