#pragma once
// open_output_file: opens the file a guest's output stream goes to (`lamina run --serial
// file:PATH`, `--console-port file:PATH`). The policy, the same for both:
//   - a symbolic link at PATH is refused (O_NOFOLLOW), so nobody who can write the folder can
//     point the output at another file of the user (kInvalidArgument, naming the fix);
//   - a regular file is truncated: each run starts a fresh log (as QEMU's file chardev does);
//     a new one is created with mode 0600, since guest output may hold secrets;
//   - a character device (/dev/null, a terminal) is written as it is; a FIFO, socket or folder
//     is refused (the guest's output must never block the VM on a reader that is not there);
//   - opening never blocks, and nothing is truncated before every check has passed.
// `option` names the option in errors ("--serial"). With `granted` the file is opened through
// it (granted_files.h: laminad records the open, a sandboxed worker replays it). Free
// function; thread-safe.

#include <filesystem>
#include <string_view>

#include "base/error.h"
#include "base/granted_files.h"
#include "base/unique_fd.h"

namespace lamina {

[[nodiscard]] Result<UniqueFd> open_output_file(const std::filesystem::path& path,
                                                std::string_view option,
                                                GrantedFiles* granted = nullptr);

}  // namespace lamina
