#include "storage/block_device.h"

#include <algorithm>
#include <vector>

namespace lamina::storage {

Result<void> BlockDevice::read_scattered(uint64_t offset, ScatterList buffers) {
  for (const std::span<std::byte>& buffer : buffers) {
    if (auto done = read(offset, buffer); !done) return done;
    offset += buffer.size();
  }
  return {};
}

Result<void> BlockDevice::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  (void)may_unmap;  // writing zeros keeps whatever allocation the format makes for a write
  if (read_only()) return fail(ErrorCode::kInvalidArgument, "the disk is open read-only");
  // Bounded memory however long the range: one buffer of at most kZeroChunk bytes, reused.
  std::vector<std::byte> zeros(static_cast<size_t>(std::min(length, kZeroChunk)));
  while (length > 0) {
    auto piece = std::span<const std::byte>(zeros).first(
        static_cast<size_t>(std::min<uint64_t>(length, zeros.size())));
    if (auto written = write(offset, piece); !written) return written;
    offset += piece.size();
    length -= piece.size();
  }
  return {};
}

}  // namespace lamina::storage
