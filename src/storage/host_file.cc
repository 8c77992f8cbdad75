#include "storage/host_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <linux/falloc.h>

#include <algorithm>
#include <vector>

namespace lamina::storage {

Error io_error(const std::string& path, std::string_view operation) {
  int saved = errno;
  ErrorCode code = saved == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo;
  return Error(code, fmt::format("{}: {} failed: {}", path, operation, std::strerror(saved)));
}

bool is_all_zero(std::span<const std::byte> data) {
  // Compare word-wise: the hot path of every copy that skips zero blocks.
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t word;
    std::memcpy(&word, data.data() + i, 8);
    if (word != 0) return false;
  }
  for (; i < data.size(); ++i) {
    if (data[i] != std::byte{0}) return false;
  }
  return true;
}

Result<HostFile> HostFile::open(const std::string& path, Mode mode) {
  int flags = O_CLOEXEC;
  switch (mode) {
    case Mode::kRead: flags |= O_RDONLY; break;
    case Mode::kReadWrite: flags |= O_RDWR; break;
    case Mode::kCreateExclusive: flags |= O_RDWR | O_CREAT | O_EXCL; break;
  }
  int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return fail(io_error(path, "open"));
  struct stat info {};
  if (::fstat(fd, &info) == 0 && S_ISDIR(info.st_mode)) {
    ::close(fd);
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}: is a folder, not an image", path));
  }
  HostFile file;
  file.fd_ = fd;
  file.writable_ = mode != Mode::kRead;
  file.path_ = path;
  return file;
}

HostFile::HostFile(HostFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), writable_(other.writable_), path_(std::move(other.path_)) {}

HostFile& HostFile::operator=(HostFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    writable_ = other.writable_;
    path_ = std::move(other.path_);
  }
  return *this;
}

HostFile::~HostFile() {
  if (fd_ >= 0) ::close(fd_);
}

Result<size_t> HostFile::read_until_end(uint64_t offset, std::span<std::byte> data) const {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pread(fd_, data.data() + done, data.size() - done,
                        static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(io_error(path_, fmt::format("read at offset {}", offset + done)));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<void> HostFile::read_exact(uint64_t offset, std::span<std::byte> data) const {
  auto done = read_until_end(offset, data);
  if (!done) return fail(done.error());
  if (*done < data.size()) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: file is truncated: {} bytes expected at offset {}", path_,
                            data.size(), offset));
  }
  return {};
}

Result<void> HostFile::read_padded(uint64_t offset, std::span<std::byte> data) const {
  auto done = read_until_end(offset, data);
  if (!done) return fail(done.error());
  std::memset(data.data() + *done, 0, data.size() - *done);
  return {};
}

Result<void> HostFile::write_all(uint64_t offset, std::span<const std::byte> data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done,
                         static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(io_error(path_, fmt::format("write at offset {}", offset + done)));
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<uint64_t> HostFile::size() const {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) return fail(io_error(path_, "stat"));
  if (S_ISBLK(info.st_mode)) {
    off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end < 0) return fail(io_error(path_, "seek to end"));
    return static_cast<uint64_t>(end);
  }
  return static_cast<uint64_t>(info.st_size);
}

Result<void> HostFile::truncate(uint64_t new_size) {
  if (::ftruncate(fd_, static_cast<off_t>(new_size)) != 0) return fail(io_error(path_, "truncate"));
  return {};
}

Result<void> HostFile::sync_data() {
  if (::fdatasync(fd_) != 0) return fail(io_error(path_, "fdatasync"));
  return {};
}

bool HostFile::punch_hole(uint64_t offset, uint64_t length) {
  return ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(length)) == 0;
}

bool HostFile::zero_range(uint64_t offset, uint64_t length) {
  return ::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(length)) == 0;
}

Result<void> HostFile::zero(uint64_t offset, uint64_t length, bool free_space) {
  if (length == 0) return {};
  if (free_space ? punch_hole(offset, length) : zero_range(offset, length)) return {};
  std::vector<std::byte> zeros(static_cast<size_t>(std::min<uint64_t>(length, 1 << 20)));
  while (length > 0) {
    auto piece = std::span<const std::byte>(zeros).first(
        static_cast<size_t>(std::min<uint64_t>(length, zeros.size())));
    if (auto r = write_all(offset, piece); !r) return r;
    offset += piece.size();
    length -= piece.size();
  }
  return {};
}

Result<uint64_t> HostFile::next_data(uint64_t offset) const {
  off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
  if (at < 0) {
    if (errno == ENXIO) return size();
    return fail(io_error(path_, "seek to data"));
  }
  return static_cast<uint64_t>(at);
}

Result<uint64_t> HostFile::next_hole(uint64_t offset) const {
  off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
  if (at < 0) {
    if (errno == ENXIO) return size();
    return fail(io_error(path_, "seek to hole"));
  }
  return static_cast<uint64_t>(at);
}

Result<std::pair<uint64_t, uint64_t>> HostFile::identity() const {
  struct stat info {};
  if (::fstat(fd_, &info) != 0) return fail(io_error(path_, "stat"));
  return std::pair<uint64_t, uint64_t>{static_cast<uint64_t>(info.st_dev),
                                       static_cast<uint64_t>(info.st_ino)};
}

}  // namespace lamina::storage
