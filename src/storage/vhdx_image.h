#pragma once
// VHDX images (Microsoft "VHDX Format Specification" v1.00 / MS-VHDX): read, write and create
// for fixed, dynamic and differencing disks (a differencing disk finds its parent through the
// parent locator's relative_path or absolute_win32_path, checked against parent_linkage; the
// parent is opened read-only, and writing to the parent later breaks the link on purpose). A
// pending log is replayed on open: into the file when opened read-write, into memory when opened
// read-only (the file is not touched).
//
// Writes allocate blocks crash-consistently: the block's data is written and flushed before
// the BAT entry that points at it, and BAT updates go through the log (MS-VHDX 2.3).

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "base/error.h"
#include "storage/block_device.h"
#include "storage/image_reference_policy.h"

namespace lamina::storage {

enum class VhdxType { kFixed, kDynamic, kDifferencing };

struct VhdxOptions {
  VhdxType type = VhdxType::kDynamic;  // kFixed preallocates every block (create_vhdx_differencing
                                       // for kDifferencing)
  uint32_t block_size = 32u << 20;     // power of two, 1 MiB .. 256 MiB
  uint32_t logical_sector_size = 512;  // 512 or 4096
  uint32_t physical_sector_size = 4096;  // 512 or 4096
  // Identity of a rewritten disk (compact, resize, merge keep it); "" makes a random GUID.
  std::string virtual_disk_id;  // "{...}", the page 83 identifier
  std::string data_write_guid;  // "{...}", what children link to
};

// What create_vhdx_differencing takes beyond the parent: the identity of a rewritten child and
// an alternate linkage (MS-VHDX 2.6.2.6.3 parent_linkage2), which merge uses to announce the
// DataWriteGuid the parent will have once the child's data is in it.
struct VhdxDifferencingOptions {
  std::string virtual_disk_id;
  std::string data_write_guid;
  std::string parent_linkage2;
};

// What `disk info` shows for a VHDX image.
struct VhdxInfo {
  VhdxType type = VhdxType::kDynamic;
  uint64_t virtual_size = 0;
  uint32_t block_size = 0;
  uint32_t logical_sector_size = 0;
  uint32_t physical_sector_size = 0;
  uint64_t file_size = 0;
  uint64_t allocated_bytes = 0;     // payload blocks present in the file, times the block size
  bool log_replay_pending = false;  // the header's LogGuid is set: opening read-write replays it
  std::string virtual_disk_id;      // the page 83 GUID, "{...}"
  std::string data_write_guid;  // changes whenever the disk's content changes; children link to it
  std::string parent_path;      // differencing: the locator's relative_path (or absolute)
  std::string parent_linkage;   // differencing: the parent's expected DataWriteGuid
  std::string parent_resolved;  // differencing: the host path the parent was found at, or ""
};

// True when the bytes start with the file type identifier "vhdxfile".
bool looks_like_vhdx(std::span<const std::byte> first_bytes);

// Reads the structure without changing the file (a pending log is replayed in memory).
Result<VhdxInfo> inspect_vhdx(const std::filesystem::path& path, const ImageAccess& access = {});

// Opens a VHDX (and, for a differencing disk, its parents read-only). Writes to a
// differencing disk must be whole logical sectors. The device owns its file and parents and
// is used from one thread at a time. Locks (host_file.h): exclusive for a writer, shared for
// readers and parents; parents are found under access.references (image_reference_policy.h).
Result<std::unique_ptr<BlockDevice>> open_vhdx(const std::filesystem::path& path, bool read_only,
                                               const ImageAccess& access = {});
// Opens one VHDX without its parent: a differencing disk's absent sectors read as zeros. For
// merge, which reads the child's own sectors while it writes the parent.
Result<std::unique_ptr<BlockDevice>> open_vhdx_alone(const std::filesystem::path& path,
                                                     bool read_only);

// Creates a new fixed or dynamic VHDX of `size` bytes (a multiple of the logical sector size,
// at most 64 TiB). Refuses to overwrite an existing file; removes a partial file on failure.
Result<void> create_vhdx(const std::filesystem::path& path, uint64_t size,
                         const VhdxOptions& options = {});

// Creates a differencing VHDX over an existing VHDX `parent`: same size, block size and sector
// sizes; the locator stores the parent's path relative to the new file and absolute, and the
// parent's current DataWriteGuid as parent_linkage.
Result<void> create_vhdx_differencing(const std::filesystem::path& path,
                                      const std::filesystem::path& parent,
                                      const VhdxDifferencingOptions& options = {});

// The VHDX row for the format table (storage/image_format.h): add `vhdx_image_format(),` to
// image_formats() to make `lamina disk` and open_image() handle VHDX.
struct ImageFormat;
ImageFormat vhdx_image_format();

}  // namespace lamina::storage
