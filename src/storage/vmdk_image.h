#pragma once
// VMDK images, read-only: monolithicSparse and streamOptimized (one sparse file with its
// descriptor inside), monolithicFlat, twoGbMaxExtentSparse and twoGbMaxExtentFlat (a text
// descriptor naming extent files relative to its folder), and ZERO extents. Delta disks
// (a parent) and ESX formats (COWD, SESPARSE) are refused with kUnsupported. Extent names go
// through the reference policy (image_reference_policy.h): inside the descriptor's folder
// unless the user allowed more, symlinks resolved, regular files only; an extent's format is
// the one its descriptor line names (SPARSE or FLAT), never probed.
// Spec: VMware "Virtual Disk Format 1.1".

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "base/error.h"
#include "storage/block_device.h"
#include "storage/image_reference_policy.h"

namespace lamina::storage {

// What `disk info` shows for a VMDK image.
struct VmdkInfo {
  std::string create_type;    // from the descriptor ("monolithicSparse" when none)
  uint64_t virtual_size = 0;  // bytes
  uint32_t extent_count = 0;
  uint64_t grain_size = 0;  // bytes, of the first sparse extent; 0 when all flat
  bool compressed = false;  // stream-optimized (deflate grains)
  uint64_t file_size = 0;   // bytes on the host, descriptor and every extent file
};

// True for a sparse extent ("KDMV") or a text descriptor ("# Disk DescriptorFile").
bool looks_like_vmdk(std::span<const std::byte> first_bytes);

Result<VmdkInfo> inspect_vmdk(const std::filesystem::path& path, const ImageAccess& access = {});

// Opens read-only (read_only = false is kUnsupported). The device owns its extent files and
// is used from one thread at a time (grain table cache).
Result<std::unique_ptr<BlockDevice>> open_vmdk(const std::filesystem::path& path,
                                               bool read_only = true,
                                               const ImageAccess& access = {});

// The VMDK row for the format table (storage/image_format.h): add `vmdk_image_format(),` to
// image_formats() to make `lamina disk` and open_image() handle VMDK.
struct ImageFormat;
ImageFormat vmdk_image_format();

}  // namespace lamina::storage
