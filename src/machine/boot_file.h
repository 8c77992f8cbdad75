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

namespace lamina::machine {

// `what` names the role in messages ("kernel", "initrd"). Fails with kNotFound when the path
// does not exist, kInvalidArgument when it is not a regular file, is empty or is larger than
// max_size, and kIo when the host refuses to read it.
Result<std::vector<std::byte>> read_boot_file(const std::string& path, std::string_view what,
                                              uint64_t max_size);

}  // namespace lamina::machine
