#pragma once
// WriteBehind: starts the writeback of freshly written ranges of a file being filled as a whole
// (a staged convert output) from a background thread. The writing thread then never waits on
// the file system's block allocation and I/O submission, the kernel never throttles it on a
// pile of dirty pages, and the final fdatasync finds little left to do. Durability is
// unchanged: the image's flush() still ends with fdatasync.
//
// Ownership: borrows the file descriptor (its owner must outlive this object: declare it
// after the file). Thread-safety: add() and drain() may be called from any thread.

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <stop_token>
#include <thread>
#include <utility>

namespace lamina::storage {

class WriteBehind {
 public:
  explicit WriteBehind(int descriptor);
  // Stops without waiting for ranges not yet started (they are still dirty, not lost).
  ~WriteBehind() = default;
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // A range that was just written; adjacent ranges are merged into one request.
  void add(uint64_t offset, uint64_t length);
  // Returns once every range added so far has had its writeback started.
  void drain();

 private:
  void run(const std::stop_token& stop);
  void hand_off_locked();

  int descriptor_;
  std::mutex mutex_;
  std::condition_variable_any changed_;
  std::deque<std::pair<uint64_t, uint64_t>> ranges_;  // offset, length
  uint64_t pending_offset_ = 0;
  uint64_t pending_length_ = 0;
  bool busy_ = false;
  std::jthread thread_;  // last: stops and joins before the members above go
};

}  // namespace lamina::storage
