// create_vhdx: lays out a new fixed or dynamic VHDX the way MS-VHDX 2.1 describes: the 1 MB
// header section, a 1 MB log, a 1 MB metadata region, the BAT, then payload blocks.
#include <bit>
#include <fmt/format.h>

#include "base/byte_order.h"
#include "storage/checked_file.h"
#include "storage/vhdx_format.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {

namespace {

using namespace vhdx;

constexpr uint64_t kLogOffset = 1 * kMiB;
constexpr uint32_t kLogLength = 1 * kMiB;
constexpr uint64_t kMetadataOffset = 2 * kMiB;
constexpr uint32_t kMetadataLength = 1 * kMiB;
constexpr uint64_t kBatOffset = 3 * kMiB;

Result<void> check_options(uint64_t size, const VhdxOptions& options) {
  if (options.type == VhdxType::kDifferencing) {
    return fail(ErrorCode::kUnsupported, "creating differencing VHDX disks is not supported");
  }
  if (options.block_size < kMinBlockSize || options.block_size > kMaxBlockSize || !std::has_single_bit(options.block_size)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("block size {} must be a power of two from 1 MiB to 256 MiB", options.block_size));
  }
  for (uint32_t sector : {options.logical_sector_size, options.physical_sector_size}) {
    if (sector != 512 && sector != 4096) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("sector size {} must be 512 or 4096", sector));
    }
  }
  if (size == 0 || size > kMaxVirtualSize || size % options.logical_sector_size != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("size {} must be a non-zero multiple of {} bytes, at most 64 TiB", size, options.logical_sector_size));
  }
  return {};
}

Result<void> write_image(CheckedFile& file, uint64_t size, const VhdxOptions& options) {
  bool fixed = options.type == VhdxType::kFixed;
  uint64_t chunk_ratio = ((1ull << 23) * options.logical_sector_size) / options.block_size;
  uint64_t data_blocks = (size + options.block_size - 1) / options.block_size;
  uint64_t bat_entries = data_blocks + (data_blocks - 1) / chunk_ratio;
  uint64_t bat_length = (bat_entries * 8 + kMiB - 1) / kMiB * kMiB;
  uint64_t payload_offset = kBatOffset + bat_length;

  if (auto done = file.write_at(0, encode_file_identifier("Lamina")); !done) return done;

  Header header;
  header.file_write_guid = random_guid();
  header.data_write_guid = random_guid();
  header.log_offset = kLogOffset;
  header.log_length = kLogLength;
  for (int slot = 0; slot < 2; ++slot) {
    header.sequence_number = static_cast<uint64_t>(slot);
    if (auto done = file.write_at(kHeaderOffsets[slot], encode_header(header)); !done) return done;
  }

  RegionEntry regions[2] = {{kBatRegion, kBatOffset, static_cast<uint32_t>(bat_length), true},
                            {kMetadataRegion, kMetadataOffset, kMetadataLength, true}};
  auto region_table = encode_region_table(regions);
  for (uint64_t offset : kRegionTableOffsets) {
    if (auto done = file.write_at(offset, region_table); !done) return done;
  }

  // Metadata items packed after the 64 KB table (2.6.1.2: offsets of at least 64 KB).
  std::vector<std::byte> items(48);
  store_le<uint32_t>(&items[0], options.block_size);
  store_le<uint32_t>(&items[4], fixed ? 1u : 0u);  // LeaveBlockAllocated
  store_le<uint64_t>(&items[8], size);
  store_guid(&items[16], random_guid());
  store_le<uint32_t>(&items[32], options.logical_sector_size);
  store_le<uint32_t>(&items[36], options.physical_sector_size);
  uint32_t base = static_cast<uint32_t>(kMetadataTableSize);
  MetadataEntry entries[5] = {{kFileParametersItem, base, 8, false, false, true},
                              {kVirtualDiskSizeItem, base + 8, 8, false, true, true},
                              {kVirtualDiskIdItem, base + 16, 16, false, true, true},
                              {kLogicalSectorSizeItem, base + 32, 4, false, true, true},
                              {kPhysicalSectorSizeItem, base + 36, 4, false, true, true}};
  if (auto done = file.write_at(kMetadataOffset, encode_metadata_table(entries)); !done) return done;
  if (auto done = file.write_at(kMetadataOffset + base, items); !done) return done;

  // The BAT: all NOT_PRESENT (zeros) for dynamic; every payload block present for fixed.
  std::vector<std::byte> bat(bat_length);
  if (fixed) {
    for (uint64_t block = 0; block < data_blocks; ++block) {
      uint64_t index = block + block / chunk_ratio;
      store_le<uint64_t>(&bat[index * 8], make_bat_entry(BlockState::kFullyPresent, payload_offset + block * options.block_size));
    }
  }
  if (auto done = file.write_at(kBatOffset, bat); !done) return done;
  uint64_t file_size = fixed ? payload_offset + data_blocks * options.block_size : payload_offset;
  if (auto done = file.truncate(file_size); !done) return done;
  return file.flush();
}

}  // namespace

Result<void> create_vhdx(const std::filesystem::path& path, uint64_t size, const VhdxOptions& options) {
  if (auto checked = check_options(size, options); !checked) return checked;
  auto file = CheckedFile::create_new(path);
  if (!file) return fail(file.error());
  auto written = write_image(*file, size, options);
  if (!written) {
    // Nothing on disk is changed by a failed command: drop the partial file.
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  return written;
}

}  // namespace lamina::storage
