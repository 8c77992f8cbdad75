#pragma once
// qcow2 images, read-only (for import): version 2 and 3 headers, L1/L2 tables, compressed
// (deflate) clusters, zero clusters and backing files. Encryption, external data files,
// extended L2 entries, zstd compression and unknown incompatible features are refused with
// kUnsupported naming the feature. Spec: QEMU docs/interop/qcow2.txt.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/error.h"
#include "storage/block_device.h"
#include "storage/image_reference_policy.h"

namespace lamina::storage {

// What `disk info` shows for a qcow2 image.
struct Qcow2Info {
  uint32_t version = 0;          // 2 or 3
  uint64_t virtual_size = 0;     // bytes
  uint32_t cluster_size = 0;     // bytes
  uint64_t file_size = 0;        // bytes on the host
  uint64_t allocated_bytes = 0;  // clusters the L2 tables map (data and compressed)
  uint32_t snapshot_count = 0;   // snapshots are not read, only counted
  bool dirty = false;            // incompatible bit 0: refcounts may be stale (harmless to read)
  std::string backing_file;      // as written in the image, empty when none
  std::string backing_format;    // from the backing format header extension, may be empty
};

// Opens a backing file named by a qcow2 header. `path` is already resolved under the reference
// policy (image_reference_policy.h); `format` is the backing format extension's value ("qcow2",
// "raw", ...; never empty: an image that does not say is refused, formats are not probed).
// `depth` counts the images already open above it, so an opener can refuse a chain that loops.
using BackingOpener = std::function<Result<std::unique_ptr<BlockDevice>>(
    const std::filesystem::path& path, std::string_view format, int depth)>;

inline constexpr int kMaxBackingDepth = 16;

// True when the first bytes carry the qcow2 magic "QFI\xfb".
bool looks_like_qcow2(std::span<const std::byte> first_bytes);

// Parses and checks the header and L1/L2 tables; the info counts allocated clusters.
Result<Qcow2Info> inspect_qcow2(const std::filesystem::path& path, const ImageAccess& access = {});

// Opens a qcow2 image read-only (read_only = false is kUnsupported). The backing file name is
// resolved under access.references, and its format must be recorded in the image (the backing
// format extension). Backing files are opened through `open_backing`, or when it is empty
// through the built-in opener, which handles qcow2 and raw backing files and refuses chains
// deeper than kMaxBackingDepth. The device owns its file and backing chain and is used from
// one thread at a time (it caches L2 tables and the last inflated cluster).
Result<std::unique_ptr<BlockDevice>> open_qcow2(const std::filesystem::path& path,
                                                bool read_only = true,
                                                const BackingOpener& open_backing = {},
                                                int depth = 0, const ImageAccess& access = {});

// The qcow2 row for the format table (storage/image_format.h): add `qcow2_image_format(),` to
// image_formats() to make `lamina disk` and open_image() handle qcow2.
struct ImageFormat;
ImageFormat qcow2_image_format();

}  // namespace lamina::storage
