#include "machine/boot_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/unique_fd.h"

namespace lamina::machine {

Result<UniqueFd> open_boot_file(const std::string& path, std::string_view what,
                                GrantedFiles* granted) {
  const auto open_file = [&]() -> Result<UniqueFd> {
    // O_NONBLOCK: a FIFO must not hang the open; it is refused by type when read.
    UniqueFd opened(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (opened.get() < 0) {
      const int error = errno;
      return fail(error == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                  fmt::format("cannot open the {} file '{}': {}", what, path,
                              std::strerror(error)));
    }
    return opened;
  };
  if (!granted) return open_file();
  auto obtained = granted->obtain(path, FileAccess::kRead, open_file);
  if (!obtained) return fail(obtained.error());
  return std::move(obtained->fd);
}

Result<std::vector<std::byte>> read_boot_file(const std::string& path, std::string_view what,
                                              uint64_t max_size, GrantedFiles* granted) {
  auto file = BootFile::open(path, what, max_size, granted);
  if (!file) return fail(file.error());
  return file->read();
}

Result<BootFile> BootFile::open(const std::string& path, std::string_view what, uint64_t max_size,
                                GrantedFiles* granted) {
  auto opened = open_boot_file(path, what, granted);
  if (!opened) return fail(opened.error());
  UniqueFd file = std::move(*opened);
  struct stat status{};
  if (::fstat(file.get(), &status) != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot inspect the {} file '{}': {}", what, path,
                                            std::strerror(errno)));
  }
  if (!S_ISREG(status.st_mode)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the {} '{}' is not a regular file", what, path));
  }
  const auto size = static_cast<uint64_t>(status.st_size);
  if (size == 0) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("the {} file '{}' is empty", what, path));
  }
  if (size > max_size) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the {} file '{}' is {} bytes; the limit is {}", what, path, size,
                            max_size));
  }
  return BootFile(std::move(file), path, what, size);
}

Result<std::vector<std::byte>> BootFile::read() const {
  std::vector<std::byte> bytes(size_);
  uint64_t done = 0;
  while (done < size_) {
    // Positional: a granted descriptor shares its file offset with the grant's copy.
    const ssize_t got = ::pread(file_.get(), bytes.data() + done, size_ - done,
                                static_cast<off_t>(done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      return fail(ErrorCode::kIo, fmt::format("cannot read the {} file '{}': {}", what_, path_,
                                              std::strerror(errno)));
    }
    // The file shrank while we read it.
    if (got == 0) {
      return fail(ErrorCode::kIo,
                  fmt::format("the {} file '{}' changed while being read", what_, path_));
    }
    done += static_cast<uint64_t>(got);
  }
  return bytes;
}

}  // namespace lamina::machine
