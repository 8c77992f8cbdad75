#pragma once
// DirtyLog: which pages of guest RAM were written since the last look, for live migration's
// pre-copy rounds. One bit per 4 KiB page of guest-physical address space below `end`. Every
// writer of guest RAM marks the pages it writes while logging is on: the built-in CPU when it
// makes a page writable in its TLB (and for the accessed/dirty bits its page walks set), devices
// after their DMA lands (virtio/dma_memory.h), loaders through GuestMemory::write.
//
// Ownership: owns the bitmap. Thread-safety: mark() from any thread at any time (relaxed
// atomics: a mark that races with take() lands in this round's bitmap or the next one, never
// nowhere); start(), stop() and take() from one controlling thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace lamina {

class DirtyLog {
 public:
  static constexpr uint64_t kPageSize = 4096;

  // Pages [0, end / kPageSize).
  explicit DirtyLog(uint64_t end);

  // Logging on, every bit clear; off again (marks are then ignored, the bitmap cleared).
  void start();
  void stop();
  bool logging() const { return logging_.load(std::memory_order_relaxed); }

  // Pages overlapping [physical, physical + length); addresses past `end` are ignored.
  void mark(uint64_t physical, uint64_t length) {
    if (!logging() || length == 0) return;
    mark_range(physical, length);
  }

  // The pages marked since start() or the previous take(), cleared as they are taken: one bit
  // per page, bit (page % 64) of word (page / 64).
  std::vector<uint64_t> take();

  uint64_t pages() const { return pages_; }

 private:
  void mark_range(uint64_t physical, uint64_t length);

  uint64_t pages_;
  size_t words_count_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
  std::atomic<bool> logging_{false};
};

}  // namespace lamina
