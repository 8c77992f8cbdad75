#include "storage/checked_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/falloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace lamina::storage {

namespace {

Error os_error(std::string_view action, const std::filesystem::path& path, int error_number) {
  return Error(error_number == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
               fmt::format("cannot {} {}: {}", action, path.string(), std::strerror(error_number)));
}

}  // namespace

Result<CheckedFile> CheckedFile::open(const std::filesystem::path& path, bool read_only) {
  int descriptor = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (descriptor < 0) return fail(os_error("open", path, errno));
  struct stat status {};
  if (::fstat(descriptor, &status) != 0) {
    int saved = errno;
    ::close(descriptor);
    return fail(os_error("inspect", path, saved));
  }
  if (!S_ISREG(status.st_mode) && !S_ISBLK(status.st_mode)) {
    ::close(descriptor);
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is not a regular file", path.string()));
  }
  // One writer per image: a second read-write open (another VM, another `lamina disk`) would
  // corrupt it. Read-only opens take no lock, so `disk info` works on a disk in use.
  if (!read_only && ::flock(descriptor, LOCK_EX | LOCK_NB) != 0) {
    int saved = errno;
    ::close(descriptor);
    if (saved == EWOULDBLOCK) {
      return fail(
          ErrorCode::kInvalidArgument,
          fmt::format("{} is open for writing by another user of the image", path.string()));
    }
    return fail(os_error("lock", path, saved));
  }
  uint64_t size = static_cast<uint64_t>(status.st_size);
  if (S_ISBLK(status.st_mode)) {
    off_t end = ::lseek(descriptor, 0, SEEK_END);
    size = end < 0 ? 0 : static_cast<uint64_t>(end);
  }
  return CheckedFile(descriptor, path, read_only, size);
}

Result<CheckedFile> CheckedFile::create_new(const std::filesystem::path& path) {
  int descriptor = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (descriptor < 0) {
    if (errno == EEXIST) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{} already exists; refusing to overwrite it", path.string()));
    }
    return fail(os_error("create", path, errno));
  }
  // Nobody else can have it open for writing yet; take the writer's lock like open() does.
  (void)::flock(descriptor, LOCK_EX | LOCK_NB);
  return CheckedFile(descriptor, path, false, 0);
}

CheckedFile::CheckedFile(CheckedFile&& other) noexcept
    : descriptor_(std::exchange(other.descriptor_, -1)),
      path_(std::move(other.path_)),
      read_only_(other.read_only_),
      size_(other.size_) {}

CheckedFile& CheckedFile::operator=(CheckedFile&& other) noexcept {
  if (this != &other) {
    if (descriptor_ >= 0) ::close(descriptor_);
    descriptor_ = std::exchange(other.descriptor_, -1);
    path_ = std::move(other.path_);
    read_only_ = other.read_only_;
    size_ = other.size_;
  }
  return *this;
}

CheckedFile::~CheckedFile() {
  if (descriptor_ >= 0) ::close(descriptor_);
}

Result<void> CheckedFile::read_at(uint64_t offset, std::span<std::byte> data,
                                  std::string_view what) const {
  if (!contains(offset, data.size())) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: {} at offset {:#x} ({} bytes) lies outside the file ({} bytes)",
                            name(), what, offset, data.size(), size_));
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t got = ::pread(descriptor_, data.data() + done, data.size() - done,
                          static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail(os_error("read", path_, errno));
    }
    if (got == 0) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("{}: file shrank while reading {}", name(), what));
    }
    done += static_cast<size_t>(got);
  }
  return {};
}

Result<void> CheckedFile::write_at(uint64_t offset, std::span<const std::byte> data) {
  if (read_only_) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", name()));
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t put = ::pwrite(descriptor_, data.data() + done, data.size() - done,
                           static_cast<off_t>(offset + done));
    if (put < 0) {
      if (errno == EINTR) continue;
      return fail(os_error("write", path_, errno));
    }
    done += static_cast<size_t>(put);
  }
  size_ = std::max(size_, offset + data.size());
  return {};
}

Result<void> CheckedFile::flush() {
  if (read_only_) return {};
  if (::fdatasync(descriptor_) != 0) return fail(os_error("flush", path_, errno));
  return {};
}

Result<void> CheckedFile::truncate(uint64_t size) {
  if (read_only_) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", name()));
  }
  if (::ftruncate(descriptor_, static_cast<off_t>(size)) != 0) {
    return fail(os_error("resize", path_, errno));
  }
  size_ = size;
  return {};
}

Result<bool> CheckedFile::punch_hole(uint64_t offset, uint64_t length) {
  if (read_only_) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", name()));
  }
  if (::fallocate(descriptor_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS) return false;
    return fail(os_error("punch a hole in", path_, errno));
  }
  return true;
}

Result<bool> CheckedFile::zero_range(uint64_t offset, uint64_t length) {
  if (read_only_) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", name()));
  }
  if (::fallocate(descriptor_, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(offset), static_cast<off_t>(length)) != 0) {
    if (errno == EOPNOTSUPP || errno == ENOSYS) return false;
    return fail(os_error("zero a range of", path_, errno));
  }
  return true;
}

}  // namespace lamina::storage
