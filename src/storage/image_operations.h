#pragma once
// Whole-image operations behind `lamina disk`: create, convert, merge, resize, compact. Each
// either writes a staged file and renames it into place (create, convert, compact, a resize that
// must rewrite) or changes the image in place in a crash-safe order (resize, merge).
//
// Thread-safety: one operation at a time per file.

#include <cstdint>
#include <functional>
#include <string>

#include "storage/block_device.h"
#include "storage/image_format.h"

namespace lamina::storage {

// Called as work advances (done <= total, in bytes of virtual disk), possibly from a worker
// thread but never from two threads at once. Returning false cancels the operation: it fails
// with "interrupted" and a staged output is removed.
using Progress = std::function<bool(uint64_t done, uint64_t total)>;

// The failure of a cancelled operation.
Error interrupted_error(std::string_view what);

struct ConvertOptions {
  std::string format = "vhd";
  CreateOptions create;  // size is taken from the source (rounded up to whole sectors)
  bool overwrite = false;
  // How the source is opened: --force-share and the reference policy for its chain.
  ImageAccess source_access;
};

Result<void> create_image(const std::string& path, std::string_view format_name,
                          const CreateOptions& options, bool overwrite);
// A differencing disk in the parent's format (VHD or VHDX; chains do not mix formats).
Result<void> create_differencing(const std::string& path, const std::string& parent,
                                 bool overwrite);
// Copies every byte of source that may be non-zero; destination must read as zeros already.
Result<void> copy_content(BlockDevice& source, BlockDevice& destination, const Progress& progress);
Result<void> convert_image(const std::string& source, const std::string& destination,
                           const ConvertOptions& options, const Progress& progress);
// Writes a differencing disk's own sectors into its parent, then empties the child (it stays a
// valid differencing disk over the updated parent). VHD and VHDX. Returns the bytes merged.
// `access` (merge, resize, compact): the reference policy the parents are found under
// (--allow-parent-dir, --allow-reference-dir); force_share is not for commands that write.
Result<uint64_t> merge_image(const std::string& child, const Progress& progress,
                             const ImageAccess& access = {});
Result<void> resize_image(const std::string& path, uint64_t new_size, bool allow_shrink,
                          const Progress& progress, const ImageAccess& access = {});
// Rewrites a dynamic or differencing VHD or VHDX without unused space and all-zero blocks.
// Returns the file sizes before and after.
Result<std::pair<uint64_t, uint64_t>> compact_image(const std::string& path,
                                                    const Progress& progress,
                                                    const ImageAccess& access = {});

}  // namespace lamina::storage
