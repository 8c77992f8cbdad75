#pragma once
// HostFile: an open host file with exact positional reads and writes (pread/pwrite loops that
// finish short transfers), sizes, truncation and durability. Every image format sits on one.
//
// Ownership: owns its file descriptor (RAII, move-only). Thread-safety: positional calls may
// run concurrently; the object itself is not synchronized.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/error.h"

namespace lamina::storage {

class HostFile {
 public:
  enum class Mode { kRead, kReadWrite, kCreateExclusive };

  static Result<HostFile> open(const std::string& path, Mode mode);

  HostFile() = default;
  HostFile(HostFile&& other) noexcept;
  HostFile& operator=(HostFile&& other) noexcept;
  HostFile(const HostFile&) = delete;
  HostFile& operator=(const HostFile&) = delete;
  ~HostFile();

  const std::string& path() const { return path_; }
  bool writable() const { return writable_; }
  int descriptor() const { return fd_; }

  // Reads exactly data.size() bytes; reading past the end of the file is kCorrupt (truncated).
  [[nodiscard]] Result<void> read_exact(uint64_t offset, std::span<std::byte> data) const;
  // Reads up to data.size() bytes and zero-fills what lies past the end of the file.
  [[nodiscard]] Result<void> read_padded(uint64_t offset, std::span<std::byte> data) const;
  [[nodiscard]] Result<void> write_all(uint64_t offset, std::span<const std::byte> data);
  [[nodiscard]] Result<uint64_t> size() const;
  [[nodiscard]] Result<void> truncate(uint64_t size);
  // fdatasync: data and the metadata needed to read it back are on stable storage.
  [[nodiscard]] Result<void> sync_data();
  // Frees a range so it reads as zeros; false when the file system cannot.
  bool punch_hole(uint64_t offset, uint64_t length);
  // Makes a range read as zeros and keeps it allocated (FALLOC_FL_ZERO_RANGE); false when the
  // file system cannot. Does not change the file size.
  bool zero_range(uint64_t offset, uint64_t length);
  // Makes a range read as zeros for sure: a hole (free_space) or FALLOC_FL_ZERO_RANGE, and
  // written zero buffers when the file system offers neither.
  [[nodiscard]] Result<void> zero(uint64_t offset, uint64_t length, bool free_space);
  // Offset of the next data at or after offset (SEEK_DATA), or the file size when none.
  Result<uint64_t> next_data(uint64_t offset) const;
  // Offset of the next hole at or after offset (SEEK_HOLE).
  Result<uint64_t> next_hole(uint64_t offset) const;
  // Identity of the underlying file (device, inode), used to detect parent loops.
  Result<std::pair<uint64_t, uint64_t>> identity() const;

 private:
  // Reads until data is full or the file ends; returns how many bytes were read.
  Result<size_t> read_until_end(uint64_t offset, std::span<std::byte> data) const;
  int fd_ = -1;
  bool writable_ = false;
  std::string path_;
};

// Makes an error from errno naming the file and the operation.
Error io_error(const std::string& path, std::string_view operation);

// True when every byte of data is zero (fast path for skipping zero blocks).
bool is_all_zero(std::span<const std::byte> data);

}  // namespace lamina::storage
