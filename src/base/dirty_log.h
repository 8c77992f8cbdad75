#pragma once
// DirtyLog: which units (pages of guest RAM, chunks of a disk) were written since the last look,
// for live migration's pre-copy rounds. One bit per `unit` bytes (a power of two; 4 KiB pages by
// default) of the space below `end`. Every
// writer of guest RAM marks the pages it writes while logging is on: the built-in CPU when it
// makes a page writable in its TLB (and for the accessed/dirty bits its page walks set), devices
// after their DMA lands (virtio/dma_memory.h), loaders through GuestMemory::write; for disks,
// storage/tracked_block_device.h on every write, discard and write-zeroes.
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

  // Units [0, ceil(end / unit)); `unit` is a power of two.
  explicit DirtyLog(uint64_t end, uint64_t unit = kPageSize);

  // Logging on, every bit clear; off again (marks are then ignored, the bitmap cleared).
  void start();
  void stop();
  bool logging() const { return logging_.load(std::memory_order_relaxed); }

  // Units overlapping [physical, physical + length); addresses past `end` are ignored.
  void mark(uint64_t physical, uint64_t length) {
    if (!logging() || length == 0) return;
    mark_range(physical, length);
  }

  // The units marked since start() or the previous take(), cleared as they are taken: one bit
  // per unit, bit (unit % 64) of word (unit / 64).
  std::vector<uint64_t> take();

  uint64_t units() const { return units_; }
  uint64_t unit_bytes() const { return uint64_t{1} << unit_shift_; }

 private:
  void mark_range(uint64_t physical, uint64_t length);

  unsigned unit_shift_;
  uint64_t units_;
  size_t words_count_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
  std::atomic<bool> logging_{false};
};

}  // namespace lamina
