#pragma once
// The disk side of checkpoints, the way Hyper-V takes them: at a checkpoint each writable disk
// of the VM is frozen and the VM goes on writing to a new differencing child of it (same
// format, VHD or VHDX, same folder); restoring a checkpoint gives the VM a new child of the
// frozen image; deleting one merges a lone child back into it. These are the file and
// definition-text steps; VmService (vm_checkpoints.cc) orders them.
//
// Stateless functions; thread-safety: none needed (the caller serializes checkpoint work).

#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace lamina::mgmt {

// A `--disk` definition string with its path replaced (commas doubled, as parse_disk_spec
// reads them), options kept; without serial= the old path's derived serial is pinned, so the
// guest sees the same disk id on the child.
std::string replace_disk_path(std::string_view spec, const std::string& new_path);

// "DIR/STEM@TAG.EXT" for a child of `parent` (STEM without any earlier "@..." part), with
// "-2", "-3"... before the extension when that name is taken.
std::string child_image_path(const std::string& parent, std::string_view tag);

// kInvalidArgument unless the image is VHD or VHDX (the formats with differencing disks),
// naming the disk and `lamina disk convert`.
[[nodiscard]] Result<void> check_checkpoint_format(const std::string& path);

// The parent of a differencing image, or nothing for a base image.
[[nodiscard]] Result<std::optional<std::string>> image_parent(const std::string& path);

}  // namespace lamina::mgmt
