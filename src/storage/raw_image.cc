#include "storage/raw_image.h"

#include <algorithm>
#include <fmt/format.h>

namespace lamina::storage {

Result<std::unique_ptr<RawImage>> RawImage::open(const std::string& path, bool writable,
                                                 bool force_share, GrantedFiles* granted) {
  auto file = HostFile::open(path, writable ? HostFile::Mode::kReadWrite : HostFile::Mode::kRead,
                             {.force_share = force_share, .granted = granted});
  if (!file) return fail(file.error());
  uint64_t size = file->size();
  return std::unique_ptr<RawImage>(new RawImage(std::move(*file), size));
}

Result<std::unique_ptr<RawImage>> RawImage::create(HostFile file, uint64_t size) {
  if (size % kSectorSize != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("size {} is not a multiple of 512 bytes", size));
  }
  if (auto r = file.truncate(size); !r) return fail(r.error());
  std::unique_ptr<RawImage> image(new RawImage(std::move(file), size));
  image->write_behind_ = std::make_unique<WriteBehind>(image->file_.descriptor());
  return image;
}

Result<void> RawImage::check_range(uint64_t offset, uint64_t length) const {
  if (offset > size_ || length > size_ - offset) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: range at {} of {} bytes is past the disk's end ({} bytes)",
                            path(), offset, length, size_));
  }
  return {};
}

Result<void> RawImage::read(uint64_t offset, std::span<std::byte> data) {
  if (auto r = check_range(offset, data.size()); !r) return r;
  return file_.read_padded(offset, data);
}

Result<void> RawImage::read_scattered(uint64_t offset, ScatterList buffers) {
  if (auto r = check_range(offset, total_bytes(buffers)); !r) return r;
  return file_.read_vectored_padded(offset, buffers);
}

Result<void> RawImage::write(uint64_t offset, std::span<const std::byte> data) {
  if (auto r = check_range(offset, data.size()); !r) return r;
  if (read_only()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}: opened read-only", path()));
  }
  if (auto r = file_.write_at(offset, data); !r) return r;
  if (write_behind_) write_behind_->add(offset, data.size());
  return {};
}

Result<void> RawImage::flush() {
  if (read_only()) return {};
  if (write_behind_) write_behind_->drain();
  return file_.flush();
}

Result<void> RawImage::discard(uint64_t offset, uint64_t length) {
  if (auto r = check_range(offset, length); !r) return r;
  (void)file_.punch_hole(offset, length);  // best effort: content after discard is unspecified
  return {};
}

Result<void> RawImage::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (auto r = check_range(offset, length); !r) return r;
  if (read_only()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}: opened read-only", path()));
  }
  // Both fallocate modes guarantee zeros on read afterwards, unlike discard's best effort.
  return file_.zero(offset, length, may_unmap);
}

Result<BlockDevice::Extent> RawImage::map_extent(uint64_t offset, uint64_t max_length) {
  max_length = std::min(max_length, size_ - offset);
  auto data = file_.next_data(offset);
  if (!data) return Extent{max_length, false};
  if (*data > offset) return Extent{std::min(max_length, *data - offset), true};
  auto hole = file_.next_hole(offset);
  if (!hole || *hole <= offset) return Extent{max_length, false};
  return Extent{std::min(max_length, *hole - offset), false};
}

Result<void> RawImage::resize(uint64_t new_size) {
  if (auto r = file_.truncate(new_size); !r) return r;
  size_ = new_size;
  return {};
}

}  // namespace lamina::storage
