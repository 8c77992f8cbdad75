#pragma once
// From a user's disk description to a VirtioBlock: parses `--disk PATH[,readonly][,serial=S]`,
// checks it before anything starts (the file exists, its format is detected, a format Lamina
// only reads is attached read-only, the serial is valid), and opens the image.
//
// Thread-safety: free functions on values; opening takes the image's lock (one writer).

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/error.h"
#include "virtio/virtio_block.h"

namespace lamina::virtio {

struct DiskSpec {
  std::string path;
  bool read_only = false;
  std::string serial;  // empty: derived from the path (derive_block_serial)
};

// "PATH[,readonly][,serial=S]" (options in any order; a path cannot contain a comma).
[[nodiscard]] Result<DiskSpec> parse_disk_spec(std::string_view text);

// Checks one disk and, across the list, that no image is attached twice while writable.
// Errors name the --disk value and what to change.
[[nodiscard]] Result<void> validate_disks(std::span<const DiskSpec> disks);

// Opens the image (read-write unless read_only) and makes its device.
[[nodiscard]] Result<std::unique_ptr<VirtioBlock>> open_virtio_block(const DiskSpec& disk);

}  // namespace lamina::virtio
