#pragma once
// One hosted sparse VMDK extent (VMware "Virtual Disk Format 1.1", "Hosted Sparse Extents"):
// the "KDMV" header, the grain directory (or its redundant copy) and grain tables, plain and
// deflate-compressed grains (stream-optimized, with markers and the footer when the header
// says GD_AT_END). Read-only.
//
// Ownership: owns its file. Thread-safety: one thread at a time (grain table cache).

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/error.h"
#include "storage/block_device.h"
#include "storage/host_file.h"

namespace lamina::storage {

struct VmdkSparseHeader {
  uint32_t version = 0;
  uint32_t flags = 0;
  uint64_t capacity_sectors = 0;
  uint64_t grain_sectors = 0;
  uint64_t descriptor_offset = 0;  // sectors
  uint64_t descriptor_sectors = 0;
  uint32_t entries_per_table = 0;           // numGTEsPerGT
  uint64_t redundant_directory_offset = 0;  // sectors
  uint64_t directory_offset = 0;            // sectors
  uint16_t compress_algorithm = 0;
};

class VmdkSparseExtent {
 public:
  static Result<std::unique_ptr<VmdkSparseExtent>> open(HostFile file);

  // The descriptor embedded in a monolithic sparse file; empty when it has none.
  Result<std::string> embedded_descriptor() const;

  const VmdkSparseHeader& header() const { return header_; }
  uint64_t capacity_bytes() const { return header_.capacity_sectors * 512; }
  uint64_t grain_bytes() const { return header_.grain_sectors * 512; }
  bool compressed() const { return (header_.flags & kCompressedFlag) != 0; }
  const HostFile& file() const { return file_; }

  // Reads extent bytes [offset, offset + out.size()); the caller keeps it inside the capacity.
  Result<void> read(uint64_t offset, std::span<std::byte> out);
  // The run at offset (inside the capacity) of grains that all read as zeros or all hold data.
  Result<BlockDevice::Extent> map(uint64_t offset, uint64_t max_length);

  static constexpr uint32_t kCompressedFlag = 1u << 16;
  static constexpr uint32_t kMarkersFlag = 1u << 17;

 private:
  VmdkSparseExtent(HostFile file, VmdkSparseHeader header)
      : file_(std::move(file)), header_(header) {}
  Result<void> load_directory();
  Result<std::vector<uint32_t>> read_directory(uint64_t offset_sectors) const;
  Result<const std::vector<uint32_t>*> grain_table(uint64_t directory_index);
  // The grain's sector in the file, 0 when it reads as zeros; kCorrupt when it points outside
  // the file or over metadata.
  Result<uint64_t> grain_sector(uint64_t grain_index);
  // Reads from grain_index on into out, as many grains as lie back to back in the file (one
  // grain when compressed or unallocated); returns the bytes filled.
  Result<size_t> read_grains(uint64_t grain_index, uint64_t in_grain, std::span<std::byte> out);
  Result<void> inflate_grain(uint64_t grain_index, uint64_t sector);
  bool overlaps_metadata(uint64_t offset, uint64_t length) const;

  HostFile file_;
  VmdkSparseHeader header_;
  std::vector<uint32_t> directory_;
  uint64_t directory_bytes_ = 0;
  uint64_t directory_start_ = 0;  // bytes; the primary or the redundant directory in use
  std::unordered_map<uint64_t, std::vector<uint32_t>> table_cache_;
  std::vector<std::byte> compressed_;
  std::vector<std::byte> grain_;
  uint64_t grain_sector_ = 0;  // the compressed grain held in grain_, 0 when none
};

// True when the bytes start with the sparse extent magic "KDMV".
bool looks_like_vmdk_sparse(std::span<const std::byte> first_bytes);

}  // namespace lamina::storage
