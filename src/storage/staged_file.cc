#include "storage/staged_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <random>

#include "storage/host_file.h"

namespace lamina::storage {

Error destination_exists(const std::string& path) {
  return Error(ErrorCode::kInvalidArgument,
               fmt::format("{} already exists; not overwriting it (use --force to replace it)",
                           path));
}

Result<StagedFile> StagedFile::prepare(const std::string& destination, bool overwrite) {
  struct stat info {};
  if (::stat(destination.c_str(), &info) == 0) {
    if (!overwrite) return fail(destination_exists(destination));
    if (S_ISDIR(info.st_mode)) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("{} is a folder", destination));
    }
  }
  std::filesystem::path path(destination);
  std::filesystem::path folder = path.parent_path();
  std::error_code error;
  if (!folder.empty() && !std::filesystem::is_directory(folder, error)) {
    return fail(ErrorCode::kNotFound, fmt::format("{}: folder {} does not exist", destination,
                                                  folder.string()));
  }
  std::random_device random;
  std::string name = fmt::format(".{}.lamina-{:08x}", path.filename().string(), random());
  std::string temporary = folder.empty() ? name : (folder / name).string();
  StagedFile staged(destination, temporary, overwrite);
  staged.committed_ = false;
  return staged;
}

StagedFile::StagedFile(StagedFile&& other) noexcept
    : destination_(std::move(other.destination_)), temporary_(std::move(other.temporary_)),
      overwrite_(other.overwrite_), committed_(std::exchange(other.committed_, true)) {}

StagedFile::~StagedFile() {
  if (!committed_) ::unlink(temporary_.c_str());
}

Result<void> StagedFile::commit() {
  {
    // Usually a no-op: the image's flush() already synced it. fdatasync rather than fsync, so
    // no journal commit is forced for time stamps alone.
    auto file = HostFile::open(temporary_, HostFile::Mode::kReadWrite);
    if (!file) return fail(file.error());
    if (auto r = file->flush(); !r) return r;
  }
  // The writer's lock on the file being replaced: nobody (a VM, another command) may hold it,
  // reading or writing, or they would keep using the old file while the name means the new one.
  // Held across the rename; a process could still open the old file in between (flock gives no
  // rename-and-lock), which the next open of the name then sees as the new file.
  HostFile replaced;
  if (overwrite_) {
    struct stat info {};
    if (::stat(destination_.c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
      auto locked = HostFile::open(destination_, HostFile::Mode::kReadWrite);
      if (!locked) return fail(locked.error());
      replaced = std::move(*locked);
    }
  }
  if (overwrite_) {
    if (::rename(temporary_.c_str(), destination_.c_str()) != 0) {
      return fail(io_error(destination_, "rename"));
    }
  } else if (::renameat2(AT_FDCWD, temporary_.c_str(), AT_FDCWD, destination_.c_str(),
                         RENAME_NOREPLACE) != 0) {
    if (errno == EEXIST) return fail(destination_exists(destination_));
    return fail(io_error(destination_, "rename"));
  }
  committed_ = true;
  // The rename itself becomes durable with the folder.
  std::string folder = std::filesystem::path(destination_).parent_path().string();
  int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  return {};
}

}  // namespace lamina::storage
