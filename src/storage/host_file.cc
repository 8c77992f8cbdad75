#include "storage/host_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <linux/falloc.h>

#include <algorithm>
#include <array>
#include <vector>

namespace lamina::storage {

namespace {

// Closes a descriptor that never became a HostFile.
struct DescriptorGuard {
  int fd;
  ~DescriptorGuard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

// Why a non-blocking flock failed: another open file holds a conflicting lock.
Error in_use_error(const std::string& path, int fd, bool writer) {
  if (!writer) {
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("{} is in use by another process (locked for writing); use "
                             "--force-share to inspect it read-only",
                             path));
  }
  // A shared lock that succeeds means the holders only read (a VM's read-only disk, a parent
  // of a differencing disk, `disk info`); it is dropped again at once.
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
    ::flock(fd, LOCK_UN);
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("{} is in use by another process (locked for reading, e.g. as a "
                             "read-only disk or the parent of a differencing disk); refusing to "
                             "write it",
                             path));
  }
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("{} is in use by another process (locked for writing)", path));
}

}  // namespace

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

namespace {

// The file's type must be one an image may be (fstat before the first read, so a FIFO or a
// device named by an image can neither hang nor feed endless data); returns its size.
Result<uint64_t> checked_size(int fd, const std::string& path, const HostFileOptions& options) {
  struct stat info {};
  if (::fstat(fd, &info) != 0) return fail(io_error(path, "stat"));
  bool block_device = S_ISBLK(info.st_mode) && !options.regular_only;
  if (!S_ISREG(info.st_mode) && !block_device) {
    std::string_view kind = S_ISDIR(info.st_mode)    ? "a folder"
                            : S_ISFIFO(info.st_mode) ? "a FIFO"
                            : S_ISSOCK(info.st_mode) ? "a socket"
                            : S_ISCHR(info.st_mode)  ? "a character device"
                            : S_ISBLK(info.st_mode)  ? "a block device"
                                                     : "not a regular file";
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: is {}, not an image file", path, kind));
  }
  if (!S_ISBLK(info.st_mode)) return static_cast<uint64_t>(info.st_size);
  off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0) return fail(io_error(path, "seek to end"));
  return static_cast<uint64_t>(end);
}

}  // namespace

Result<HostFile> HostFile::open(const std::string& path, Mode mode, Options options) {
  GrantedFiles* granted = std::exchange(options.granted, nullptr);
  if (!granted || mode == Mode::kCreateExclusive) return open_path(path, mode, options);
  // Through the grants: opened (checked and locked) for real while laminad records, or the
  // descriptor laminad opened, whose lock came with it, while a worker replays.
  auto obtained = granted->obtain(
      path, mode == Mode::kRead ? FileAccess::kRead : FileAccess::kReadWrite,
      [&]() -> Result<UniqueFd> {
        auto file = open_path(path, mode, options);
        if (!file) return fail(file.error());
        return UniqueFd(std::exchange(file->fd_, -1));
      });
  if (!obtained) return fail(obtained.error());
  auto size = checked_size(obtained->fd.get(), path, options);
  if (!size) return fail(size.error());
  HostFile file;
  file.size_ = *size;
  file.fd_ = obtained->fd.release();
  file.writable_ = mode != Mode::kRead;
  file.path_ = path;
  return file;
}

Result<HostFile> HostFile::open_path(const std::string& path, Mode mode, const Options& options) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below by type.
  int flags = O_CLOEXEC | O_NONBLOCK;
  switch (mode) {
    case Mode::kRead: flags |= O_RDONLY; break;
    case Mode::kReadWrite: flags |= O_RDWR; break;
    case Mode::kCreateExclusive: flags |= O_RDWR | O_CREAT | O_EXCL; break;
  }
  DescriptorGuard guard{::open(path.c_str(), flags, 0644)};
  if (guard.fd < 0) {
    if (errno == EEXIST) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{} already exists; refusing to overwrite it", path));
    }
    return fail(io_error(path, "open"));
  }
  auto size = checked_size(guard.fd, path, options);
  if (!size) return fail(size.error());
  // Regular files and block devices never block; plain blocking I/O from here on.
  if (::fcntl(guard.fd, F_SETFL, 0) != 0) {
    return fail(io_error(path, "fcntl"));
  }
  bool writer = mode != Mode::kRead;
  if (writer || !options.force_share) {
    if (::flock(guard.fd, (writer ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) return fail(in_use_error(path, guard.fd, writer));
      return fail(io_error(path, "lock"));
    }
  }
  HostFile file;
  file.size_ = *size;
  file.fd_ = guard.release();
  file.writable_ = writer;
  file.path_ = path;
  return file;
}

Result<void> HostFile::set_locked(bool locked) {
  if (!locked) {
    if (::flock(fd_, LOCK_UN) != 0) return fail(io_error(path_, "unlock"));
    return {};
  }
  if (::flock(fd_, (writable_ ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return fail(in_use_error(path_, fd_, writable_));
    return fail(io_error(path_, "lock"));
  }
  return {};
}

HostFile::HostFile(HostFile&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      writable_(other.writable_),
      size_(other.size_),
      path_(std::move(other.path_)),
      observer_(std::exchange(other.observer_, nullptr)) {}

HostFile& HostFile::operator=(HostFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    writable_ = other.writable_;
    size_ = other.size_;
    path_ = std::move(other.path_);
    observer_ = std::exchange(other.observer_, nullptr);
  }
  return *this;
}

HostFile::~HostFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::string HostFile::name() const { return std::filesystem::path(path_).filename().string(); }

Result<void> HostFile::refuse_read_only() const {
  return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", name()));
}

Result<size_t> HostFile::read_vectored_until_end(uint64_t offset, ScatterList buffers) const {
  std::array<iovec, kVectoredPieces> batch;
  size_t done = 0;
  size_t index = 0, skip = 0;  // the next byte's buffer and its offset there
  while (true) {
    while (index < buffers.size() && skip == buffers[index].size()) ++index, skip = 0;
    if (index == buffers.size()) break;
    size_t count = 0;
    for (size_t i = index; i < buffers.size() && count < batch.size(); ++i) {
      const std::span<std::byte> rest = buffers[i].subspan(i == index ? skip : 0);
      if (!rest.empty()) batch[count++] = iovec{rest.data(), rest.size()};
    }
    const ssize_t n = ::preadv(fd_, batch.data(), static_cast<int>(count), static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(io_error(path_, fmt::format("read at offset {}", offset + done)));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
    // A short read resumes where it stopped, possibly inside a buffer.
    for (size_t left = static_cast<size_t>(n); left > 0;) {
      const size_t in_buffer = std::min(left, buffers[index].size() - skip);
      left -= in_buffer;
      skip += in_buffer;
      if (skip == buffers[index].size()) ++index, skip = 0;
    }
  }
  return done;
}

Result<void> HostFile::read_vectored_at(uint64_t offset, ScatterList buffers,
                                        std::string_view what) const {
  const uint64_t length = total_bytes(buffers);
  if (!contains(offset, length)) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: {} at offset {:#x} ({} bytes) lies outside the file ({} bytes)",
                            name(), what, offset, length, size_));
  }
  auto done = read_vectored_until_end(offset, buffers);
  if (!done) return fail(done.error());
  if (*done < length) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: file shrank while reading {}", name(), what));
  }
  return {};
}

Result<void> HostFile::read_vectored_padded(uint64_t offset, ScatterList buffers) const {
  auto done = read_vectored_until_end(offset, buffers);
  if (!done) return fail(done.error());
  const uint64_t length = total_bytes(buffers);
  if (*done == length) return {};
  // What lies past the end of the file reads as zeros.
  ScatterCursor cursor(buffers);
  std::vector<std::span<std::byte>> pieces;
  cursor.take(*done, pieces);
  cursor.take(length - *done, pieces);
  for (const std::span<std::byte>& piece : pieces) std::memset(piece.data(), 0, piece.size());
  return {};
}

Result<void> HostFile::read_at(uint64_t offset, std::span<std::byte> data,
                               std::string_view what) const {
  const std::span<std::byte> whole[] = {data};
  return read_vectored_at(offset, whole, what);
}

Result<void> HostFile::read_padded(uint64_t offset, std::span<std::byte> data) const {
  const std::span<std::byte> whole[] = {data};
  return read_vectored_padded(offset, whole);
}

Result<void> HostFile::write_at(uint64_t offset, std::span<const std::byte> data) {
  if (!writable_) return refuse_read_only();
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
  size_ = std::max(size_, offset + data.size());
  if (observer_ != nullptr) observer_->wrote(offset, data);
  return {};
}

Result<void> HostFile::truncate(uint64_t new_size) {
  if (!writable_) return refuse_read_only();
  if (::ftruncate(fd_, static_cast<off_t>(new_size)) != 0) return fail(io_error(path_, "truncate"));
  size_ = new_size;
  if (observer_ != nullptr) observer_->truncated(new_size);
  return {};
}

Result<void> HostFile::flush() {
  if (!writable_) return {};
  if (::fdatasync(fd_) != 0) return fail(io_error(path_, "fdatasync"));
  if (observer_ != nullptr) observer_->flushed();
  return {};
}

Result<bool> HostFile::punch_hole(uint64_t offset, uint64_t length) {
  if (!writable_) return fail(refuse_read_only().error());
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS) return false;
    return fail(io_error(path_, "punch a hole"));
  }
  if (observer_ != nullptr) observer_->zeroed(offset, std::min(length, size_ - std::min(size_, offset)));
  return true;
}

Result<bool> HostFile::zero_range(uint64_t offset, uint64_t length) {
  if (!writable_) return fail(refuse_read_only().error());
  if (::fallocate(fd_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS) return false;
    return fail(io_error(path_, "zero a range"));
  }
  if (observer_ != nullptr) observer_->zeroed(offset, std::min(length, size_ - std::min(size_, offset)));
  return true;
}

Result<void> HostFile::zero(uint64_t offset, uint64_t length, bool free_space) {
  if (length == 0) return {};
  auto done = free_space ? punch_hole(offset, length) : zero_range(offset, length);
  if (done && *done) return {};
  std::vector<std::byte> zeros(static_cast<size_t>(std::min<uint64_t>(length, 1 << 20)));
  while (length > 0) {
    auto piece = std::span<const std::byte>(zeros).first(
        static_cast<size_t>(std::min<uint64_t>(length, zeros.size())));
    if (auto r = write_at(offset, piece); !r) return r;
    offset += piece.size();
    length -= piece.size();
  }
  return {};
}

Result<uint64_t> HostFile::next_data(uint64_t offset) const {
  off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
  if (at < 0) {
    if (errno == ENXIO) return size_;
    return fail(io_error(path_, "seek to data"));
  }
  return static_cast<uint64_t>(at);
}

Result<uint64_t> HostFile::next_hole(uint64_t offset) const {
  off_t at = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
  if (at < 0) {
    if (errno == ENXIO) return size_;
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
