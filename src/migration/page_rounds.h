#pragma once
// PageRounds: which round's copy of each guest page a migration's destination holds. Pages
// travel on several connections at once, so a page's copy from round r may arrive after its
// copy from round r + 1; only a copy from the page's latest round so far may be written.
// apply() decides and writes under one lock per stripe of pages, so two connections writing
// the same page are ordered by round, never interleaved.
//
// Ownership: owns its table (two bytes per page). Thread-safety: apply() from any thread.

#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

namespace lamina::migration {

class PageRounds {
 public:
  explicit PageRounds(uint64_t pages) : rounds_(pages, 0) {}

  // Calls `write()` when `round` is not older than the page's latest copy so far (the first
  // copy of any page is written), and records it. False when the page index is outside the
  // table (the caller refuses such a page before). `write` returns whether it succeeded.
  template <typename Write>
  bool apply(uint64_t page, uint16_t round, Write&& write) {
    if (page >= rounds_.size()) return false;
    std::lock_guard lock(stripes_[page % stripes_.size()]);
    if (round < rounds_[page]) return true;  // a later copy is already there
    if (!write()) return false;
    rounds_[page] = round;
    return true;
  }

 private:
  std::vector<uint16_t> rounds_;
  std::array<std::mutex, 64> stripes_;
};

}  // namespace lamina::migration
