#pragma once
// Reads a file a user names for booting (--kernel, --initrd, a Multiboot module) into memory,
// with errors that say which file and what is wrong with it.
//
// Stateless; safe from any thread.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/granted_files.h"
#include "base/unique_fd.h"

namespace lamina::machine {

// `what` names the role in messages ("kernel", "initrd"). Fails with kNotFound when the path
// does not exist, kInvalidArgument when it is not a regular file, is empty or is larger than
// max_size, and kIo when the host refuses to read it. With `granted`, the file is opened
// through it (base/granted_files.h: recorded by laminad, replayed by a worker).
// The file opened read-only (not yet checked), e.g. for laminad to record for a worker.
Result<UniqueFd> open_boot_file(const std::string& path, std::string_view what,
                                GrantedFiles* granted = nullptr);

Result<std::vector<std::byte>> read_boot_file(const std::string& path, std::string_view what,
                                              uint64_t max_size, GrantedFiles* granted = nullptr);

// A boot file opened and checked (as read_boot_file checks it) now, and read when needed: a
// worker that restores a VM keeps its kernel and initrd this way, for the reboot that may come,
// instead of reading tens of megabytes while the guest waits to resume. The descriptor is
// read positionally, so a sandbox that opens no path may read it later. Owns the descriptor.
class BootFile {
 public:
  [[nodiscard]] static Result<BootFile> open(const std::string& path, std::string_view what,
                                             uint64_t max_size, GrantedFiles* granted = nullptr);
  // The whole file; kIo when it cannot be read or shrank since open().
  [[nodiscard]] Result<std::vector<std::byte>> read() const;

 private:
  BootFile(UniqueFd file, std::string path, std::string_view what, uint64_t size)
      : file_(std::move(file)), path_(std::move(path)), what_(what), size_(size) {}
  UniqueFd file_;
  std::string path_;
  std::string what_;
  uint64_t size_ = 0;
};

}  // namespace lamina::machine
