// create_vhdx: lays out a new fixed or dynamic VHDX the way MS-VHDX 2.1 describes: the 1 MB
// header section, a 1 MB log, a 1 MB metadata region, the BAT, then payload blocks.
#include <fmt/format.h>
#include <algorithm>
#include <bit>

#include "base/byte_order.h"
#include "storage/host_file.h"
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

Result<void> check_identity(const VhdxOptions& options) {
  for (const std::string* guid : {&options.virtual_disk_id, &options.data_write_guid}) {
    if (!guid->empty() && !parse_guid(*guid)) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("'{}' is not a GUID", *guid));
    }
  }
  return {};
}

Result<void> check_options(uint64_t size, const VhdxOptions& options) {
  if (auto checked = check_identity(options); !checked) return checked;
  if (options.type == VhdxType::kDifferencing) {
    return fail(ErrorCode::kInvalidArgument,
                "differencing disks are made by create_vhdx_differencing");
  }
  if (options.block_size < kMinBlockSize || options.block_size > kMaxBlockSize ||
      !std::has_single_bit(options.block_size)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("block size {} must be a power of two from 1 MiB to 256 MiB",
                            options.block_size));
  }
  for (uint32_t sector : {options.logical_sector_size, options.physical_sector_size}) {
    if (sector != 512 && sector != 4096) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("sector size {} must be 512 or 4096", sector));
    }
  }
  if (size == 0 || size > kMaxVirtualSize || size % options.logical_sector_size != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("size {} must be a non-zero multiple of {} bytes, at most 64 TiB", size,
                            options.logical_sector_size));
  }
  return {};
}

// The differencing part of a new image: the parent locator item (2.6.2.6).
struct ParentLink {
  std::string linkage;        // "{...}", the parent's DataWriteGuid
  std::string linkage2;       // "" or an alternate linkage
  std::string relative_path;  // '\'-separated
  std::string absolute_path;  // "\\?\" + the absolute path, '\'-separated
};

std::vector<std::byte> encode_parent_locator(const ParentLink& link) {
  std::vector<std::pair<std::string_view, std::string_view>> pairs = {
      {"parent_linkage", link.linkage},
      {"relative_path", link.relative_path},
      {"absolute_win32_path", link.absolute_path}};
  if (!link.linkage2.empty()) pairs.emplace_back("parent_linkage2", link.linkage2);
  std::vector<std::byte> item(20 + 12 * pairs.size());
  store_guid(&item[0], kVhdxParentLocatorType);
  store_le<uint16_t>(&item[18], static_cast<uint16_t>(pairs.size()));
  auto append_utf16 = [&](std::string_view text) {
    uint32_t offset = static_cast<uint32_t>(item.size());
    for (char character : text) {
      item.resize(item.size() + 2);
      store_le<uint16_t>(&item[item.size() - 2],
                         static_cast<uint16_t>(static_cast<unsigned char>(character)));
    }
    return offset;
  };
  for (size_t index = 0; index < pairs.size(); ++index) {
    uint32_t key = append_utf16(pairs[index].first);
    uint32_t value = append_utf16(pairs[index].second);
    std::byte* entry = &item[20 + 12 * index];
    store_le<uint32_t>(entry, key);
    store_le<uint32_t>(entry + 4, value);
    store_le<uint16_t>(entry + 8, static_cast<uint16_t>(pairs[index].first.size() * 2));
    store_le<uint16_t>(entry + 10, static_cast<uint16_t>(pairs[index].second.size() * 2));
  }
  return item;
}

Result<void> write_image(HostFile& file, uint64_t size, const VhdxOptions& options,
                         const ParentLink* parent) {
  bool fixed = options.type == VhdxType::kFixed;
  uint64_t chunk_ratio = ((1ull << 23) * options.logical_sector_size) / options.block_size;
  uint64_t data_blocks = (size + options.block_size - 1) / options.block_size;
  // Section 2.5: a differencing disk also needs every sector bitmap entry.
  uint64_t bitmap_blocks = (data_blocks + chunk_ratio - 1) / chunk_ratio;
  uint64_t bat_entries =
      parent ? bitmap_blocks * (chunk_ratio + 1) : data_blocks + (data_blocks - 1) / chunk_ratio;
  uint64_t bat_length = (bat_entries * 8 + kMiB - 1) / kMiB * kMiB;
  uint64_t payload_offset = kBatOffset + bat_length;

  if (auto done = file.write_at(0, encode_file_identifier("Lamina")); !done) return done;

  Header header;
  header.file_write_guid = random_guid();
  header.data_write_guid = random_guid();
  if (auto guid = parse_guid(options.data_write_guid)) header.data_write_guid = *guid;
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
  store_le<uint32_t>(&items[4], fixed ? 1u : parent ? 2u : 0u);  // LeaveBlockAllocated, HasParent
  store_le<uint64_t>(&items[8], size);
  store_guid(&items[16], parse_guid(options.virtual_disk_id).value_or(random_guid()));
  store_le<uint32_t>(&items[32], options.logical_sector_size);
  store_le<uint32_t>(&items[36], options.physical_sector_size);
  uint32_t base = static_cast<uint32_t>(kMetadataTableSize);
  std::vector<MetadataEntry> entries = {{kFileParametersItem, base, 8, false, false, true},
                                        {kVirtualDiskSizeItem, base + 8, 8, false, true, true},
                                        {kVirtualDiskIdItem, base + 16, 16, false, true, true},
                                        {kLogicalSectorSizeItem, base + 32, 4, false, true, true},
                                        {kPhysicalSectorSizeItem, base + 36, 4, false, true, true}};
  if (parent) {
    auto locator = encode_parent_locator(*parent);
    if (locator.size() > kMaxMetadataItemSize - 64)
      return fail(ErrorCode::kInvalidArgument, "parent path is too long");
    entries.push_back(
        {kParentLocatorItem, base + 64, static_cast<uint32_t>(locator.size()), false, false, true});
    items.resize(64);
    items.insert(items.end(), locator.begin(), locator.end());
  }
  if (auto done = file.write_at(kMetadataOffset, encode_metadata_table(entries)); !done)
    return done;
  // The five fixed items and, for a differencing disk, the locator at +64.
  if (auto done = file.write_at(kMetadataOffset + base, items); !done) return done;

  // The BAT: all NOT_PRESENT (zeros) for dynamic; every payload block present for fixed.
  std::vector<std::byte> bat(bat_length);
  if (fixed) {
    for (uint64_t block = 0; block < data_blocks; ++block) {
      uint64_t index = block + block / chunk_ratio;
      store_le<uint64_t>(
          &bat[index * 8],
          make_bat_entry(BlockState::kFullyPresent, payload_offset + block * options.block_size));
    }
  }
  if (auto done = file.write_at(kBatOffset, bat); !done) return done;
  uint64_t file_size = fixed ? payload_offset + data_blocks * options.block_size : payload_offset;
  if (auto done = file.truncate(file_size); !done) return done;
  return file.flush();
}

Result<void> create_file(const std::filesystem::path& path, uint64_t size,
                         const VhdxOptions& options, const ParentLink* parent) {
  auto file = HostFile::open(path.string(), HostFile::Mode::kCreateExclusive);
  if (!file) return fail(file.error());
  auto written = write_image(*file, size, options, parent);
  if (!written) {
    // Nothing on disk is changed by a failed command: drop the partial file.
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
  return written;
}

// Locator paths use '\\' separators (2.6.2.6.3).
std::string windows_separators(std::string path) {
  std::ranges::replace(path, '/', '\\');
  return path;
}

}  // namespace

Result<void> create_vhdx(const std::filesystem::path& path, uint64_t size,
                         const VhdxOptions& options) {
  if (auto checked = check_options(size, options); !checked) return checked;
  return create_file(path, size, options, nullptr);
}

Result<void> create_vhdx_differencing(const std::filesystem::path& path,
                                      const std::filesystem::path& parent,
                                      const VhdxDifferencingOptions& differencing) {
  auto info = inspect_vhdx(parent);
  if (!info) return fail(info.error().with_context("parent"));
  if (info->log_replay_pending) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("parent {} has a pending log; open it read-write once to replay it",
                            parent.string()));
  }
  std::error_code error;
  auto parent_absolute =
      std::filesystem::weakly_canonical(std::filesystem::absolute(parent), error);
  auto child_folder =
      std::filesystem::weakly_canonical(std::filesystem::absolute(path).parent_path(), error);
  if (error)
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("cannot resolve {}: {}", parent.string(), error.message()));
  ParentLink link;
  link.linkage = info->data_write_guid;
  if (!differencing.parent_linkage2.empty()) {
    auto guid = parse_guid(differencing.parent_linkage2);
    if (!guid) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("'{}' is not a GUID", differencing.parent_linkage2));
    }
    link.linkage2 = guid->to_string();
  }
  link.relative_path =
      windows_separators(std::filesystem::relative(parent_absolute, child_folder).generic_string());
  link.absolute_path = "\\\\?\\" + windows_separators(parent_absolute.generic_string());
  VhdxOptions options;
  options.type = VhdxType::kDifferencing;
  options.block_size = info->block_size;
  options.logical_sector_size = info->logical_sector_size;
  options.physical_sector_size = info->physical_sector_size;
  options.virtual_disk_id = differencing.virtual_disk_id;
  options.data_write_guid = differencing.data_write_guid;
  if (auto checked = check_identity(options); !checked) return checked;
  return create_file(path, info->virtual_size, options, &link);
}

}  // namespace lamina::storage
