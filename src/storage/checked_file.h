#pragma once
// CheckedFile: an image file opened for positioned reads and writes, where every read must lie
// inside the file. The image formats read untrusted offsets from their own headers, so a read
// that runs past the end is reported as kCorrupt naming the file instead of returning short data.
//
// Ownership: owns the file descriptor (RAII, move-only). Thread-safety: pread/pwrite are
// positioned, so reads may come from several threads; writes and size changes need one writer.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

#include "base/error.h"

namespace lamina::storage {

class CheckedFile {
 public:
  // Opens an existing file; kNotFound when it does not exist, kIo when the host refuses.
  // A writable open takes an exclusive flock; another writable open of the same file then
  // fails with kInvalidArgument until the first is closed.
  static Result<CheckedFile> open(const std::filesystem::path& path, bool read_only);
  // Creates a new file; refuses to replace an existing one (kInvalidArgument).
  static Result<CheckedFile> create_new(const std::filesystem::path& path);

  CheckedFile(CheckedFile&& other) noexcept;
  CheckedFile& operator=(CheckedFile&& other) noexcept;
  CheckedFile(const CheckedFile&) = delete;
  CheckedFile& operator=(const CheckedFile&) = delete;
  ~CheckedFile();

  // Reads exactly data.size() bytes; kCorrupt naming `what` when the range passes the end.
  [[nodiscard]] Result<void> read_at(uint64_t offset, std::span<std::byte> data,
                                     std::string_view what = "data") const;
  [[nodiscard]] Result<void> write_at(uint64_t offset, std::span<const std::byte> data);
  // fdatasync: data and the metadata needed to read it back are durable.
  [[nodiscard]] Result<void> flush();
  [[nodiscard]] Result<void> truncate(uint64_t size);
  // Frees the range on the host so it reads as zeros; the file size does not change. Returns
  // false (not an error) when the filesystem cannot punch holes.
  [[nodiscard]] Result<bool> punch_hole(uint64_t offset, uint64_t length);
  // Makes the range read as zeros and keeps it allocated (FALLOC_FL_ZERO_RANGE); false (not an
  // error) when the filesystem cannot.
  [[nodiscard]] Result<bool> zero_range(uint64_t offset, uint64_t length);

  // True when [offset, offset + length) lies inside the file, without overflow.
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= size_ && length <= size_ - offset;
  }
  uint64_t size() const { return size_; }
  bool read_only() const { return read_only_; }
  const std::filesystem::path& path() const { return path_; }
  // "name.ext" for messages.
  std::string name() const { return path_.filename().string(); }

 private:
  CheckedFile(int descriptor, std::filesystem::path path, bool read_only, uint64_t size)
      : descriptor_(descriptor), path_(std::move(path)), read_only_(read_only), size_(size) {}

  int descriptor_ = -1;
  std::filesystem::path path_;
  bool read_only_ = true;
  uint64_t size_ = 0;
};

}  // namespace lamina::storage
