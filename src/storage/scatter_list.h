#pragma once
// ScatterList: one read's destination in pieces, filled in order as if they were one buffer
// (the guest pages of a virtio-blk request, which lie anywhere in guest RAM). ScatterCursor
// walks it by byte counts, so a format can split a read at its own block boundaries.
//
// Ownership: borrows the buffers. Thread-safety: none (a cursor belongs to one read).

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace lamina::storage {

using ScatterList = std::span<const std::span<std::byte>>;

inline uint64_t total_bytes(ScatterList buffers) {
  uint64_t total = 0;
  for (const std::span<std::byte>& buffer : buffers) total += buffer.size();
  return total;
}

class ScatterCursor {
 public:
  explicit ScatterCursor(ScatterList buffers) : buffers_(buffers) {}

  // The next `bytes` bytes as pieces (a buffer split where the count ends inside it), into
  // `out`, which is cleared first; fewer when the list ends first.
  void take(uint64_t bytes, std::vector<std::span<std::byte>>& out) {
    out.clear();
    while (bytes > 0 && index_ < buffers_.size()) {
      const std::span<std::byte> rest = buffers_[index_].subspan(offset_);
      const size_t piece = static_cast<size_t>(std::min<uint64_t>(rest.size(), bytes));
      if (piece > 0) out.push_back(rest.first(piece));
      bytes -= piece;
      offset_ += piece;
      if (offset_ == buffers_[index_].size()) {
        ++index_;
        offset_ = 0;
      }
    }
  }

 private:
  ScatterList buffers_;
  size_t index_ = 0;   // the buffer the next byte lies in
  size_t offset_ = 0;  // and its offset there
};

}  // namespace lamina::storage
