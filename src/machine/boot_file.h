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

}  // namespace lamina::machine
