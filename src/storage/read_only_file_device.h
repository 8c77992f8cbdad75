#pragma once
// A plain file seen as a read-only BlockDevice: the raw backing file of a qcow2 image and the
// flat extents of a VMDK use it. (The raw image format with writes belongs to raw_image.)

#include <filesystem>
#include <memory>

#include "base/error.h"
#include "base/granted_files.h"
#include "storage/block_device.h"

namespace lamina::storage {

// Size is the file's size; reads past it are kInvalidArgument. The file is one an image names
// (a backing file, an extent): regular files only, with a shared lock unless force_share.
Result<std::unique_ptr<BlockDevice>> open_read_only_file_device(const std::filesystem::path& path,
                                                                bool force_share = false,
                                                                GrantedFiles* granted = nullptr);

}  // namespace lamina::storage
