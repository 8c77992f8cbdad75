#include "base/dirty_log.h"

#include <bit>

namespace lamina {

DirtyLog::DirtyLog(uint64_t end, uint64_t unit)
    : unit_shift_(static_cast<unsigned>(std::countr_zero(std::bit_ceil(unit)))),
      units_((end + unit_bytes() - 1) >> unit_shift_),
      words_count_((units_ + 63) / 64),
      words_(std::make_unique<std::atomic<uint64_t>[]>(words_count_)) {}

void DirtyLog::start() {
  for (size_t index = 0; index < words_count_; ++index) words_[index].store(0);
  logging_.store(true);
}

void DirtyLog::stop() {
  logging_.store(false);
  for (size_t index = 0; index < words_count_; ++index) words_[index].store(0);
}

void DirtyLog::mark_range(uint64_t physical, uint64_t length) {
  const uint64_t first = physical >> unit_shift_;
  // Saturating: a range running past the address space is cut at the log's end.
  const uint64_t last_byte = length - 1 > UINT64_MAX - physical ? UINT64_MAX : physical + length - 1;
  const uint64_t last = last_byte >> unit_shift_;
  for (uint64_t page = first; page <= last && page < units_; ++page) {
    std::atomic<uint64_t>& word = words_[page / 64];
    const uint64_t bit = uint64_t{1} << (page % 64);
    // Most marks find the bit already set: a load first keeps the cache line shared.
    if ((word.load(std::memory_order_relaxed) & bit) == 0) word.fetch_or(bit, std::memory_order_relaxed);
  }
}

std::vector<uint64_t> DirtyLog::take() {
  std::vector<uint64_t> taken(words_count_);
  for (size_t index = 0; index < words_count_; ++index) {
    if (words_[index].load(std::memory_order_relaxed) != 0) {
      taken[index] = words_[index].exchange(0, std::memory_order_acq_rel);
    }
  }
  return taken;
}

}  // namespace lamina
