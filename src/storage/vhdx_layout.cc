#include "storage/vhdx_layout.h"

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <bit>

#include "base/byte_order.h"

namespace lamina::storage::vhdx {

namespace {

std::unexpected<Error> corrupt(const FileView& view, std::string_view what) {
  return fail(ErrorCode::kCorrupt, fmt::format("{}: {}", view.file().name(), what));
}

// A described range of the file. The BAT adds one per present block, so the description is a
// fixed label plus a number, formatted only for the message (a crafted BAT of millions of
// entries must not cost a string each).
struct Extent {
  uint64_t offset;
  uint64_t length;
  std::string what;
  uint64_t number = kNoNumber;  // BAT extents: the payload block or the bitmap's BAT entry
  bool bitmap = false;
  static constexpr uint64_t kNoNumber = ~0ull;
  std::string describe() const {
    if (number == kNoNumber) return what;
    return bitmap ? fmt::format("sector bitmap block (BAT entry {})", number)
                  : fmt::format("payload block {}", number);
  }
};

// The first pair of extents that overlap, if any.
std::optional<std::pair<Extent, Extent>> find_overlap(std::vector<Extent> extents) {
  std::ranges::sort(extents, {}, &Extent::offset);
  for (size_t index = 1; index < extents.size(); ++index) {
    const Extent& before = extents[index - 1];
    if (extents[index].offset < before.offset + before.length)
      return std::make_pair(before, extents[index]);
  }
  return std::nullopt;
}

struct Regions {
  uint64_t bat_offset = 0, bat_length = 0, metadata_offset = 0, metadata_length = 0;
};

Result<Regions> parse_regions(const FileView& view, const Header& header) {
  std::vector<std::byte> raw(kRegionTableSize);
  std::optional<std::vector<RegionEntry>> entries;
  // Section 2.2.3: two copies; either valid one will do.
  for (uint64_t offset : kRegionTableOffsets) {
    if (auto done = view.read(offset, raw, "region table"); !done) return fail(done.error());
    entries = decode_region_table(raw);
    if (entries) break;
  }
  if (!entries)
    return corrupt(view, "both region tables are damaged (bad signature, checksum or entry count)");
  Regions regions;
  std::vector<Extent> extents = {{0, kHeaderSectionSize, "the header section"}};
  if (!header.log_guid.is_zero() || header.log_length != 0) {
    extents.push_back({header.log_offset, header.log_length, "the log"});
  }
  for (const RegionEntry& entry : *entries) {
    bool is_bat = entry.guid == kBatRegion;
    bool is_metadata = entry.guid == kMetadataRegion;
    if (!is_bat && !is_metadata) {
      if (entry.required) {
        return fail(ErrorCode::kUnsupported,
                    fmt::format("{}: required region {} is unknown to Lamina", view.file().name(),
                                entry.guid.to_string()));
      }
      continue;
    }
    std::string_view name = is_bat ? "BAT region" : "metadata region";
    if ((is_bat && regions.bat_length != 0) || (is_metadata && regions.metadata_length != 0)) {
      return corrupt(view, fmt::format("the region table lists the {} twice", name));
    }
    if (entry.file_offset % kMiB != 0 || entry.file_offset < kHeaderSectionSize ||
        entry.length == 0 || entry.length % kMiB != 0 ||
        !view.contains(entry.file_offset, entry.length)) {
      return corrupt(view, fmt::format("{} at {:#x} ({} bytes) is misaligned or outside the file",
                                       name, entry.file_offset, entry.length));
    }
    (is_bat ? regions.bat_offset : regions.metadata_offset) = entry.file_offset;
    (is_bat ? regions.bat_length : regions.metadata_length) = entry.length;
    extents.push_back({entry.file_offset, entry.length, std::string(name)});
  }
  if (regions.bat_length == 0 || regions.metadata_length == 0) {
    return corrupt(view, "the region table lacks the BAT or the metadata region");
  }
  if (auto overlap = find_overlap(extents)) {
    return corrupt(view, fmt::format("{} overlaps {}", overlap->second.describe(), overlap->first.describe()));
  }
  return regions;
}

Result<void> parse_parent_locator(const FileView& view, std::span<const std::byte> item,
                                  Layout& layout) {
  if (item.size() < 20) return corrupt(view, "parent locator is too short");
  if (load_guid(item.data()) != kVhdxParentLocatorType) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: parent locator type {} is not the VHDX type", view.file().name(),
                            load_guid(item.data()).to_string()));
  }
  uint16_t count = load_le<uint16_t>(&item[18]);
  if (20 + uint64_t{count} * 12 > item.size())
    return corrupt(view, "parent locator entries run past the item");
  for (uint16_t index = 0; index < count; ++index) {
    const std::byte* entry = &item[20 + 12 * index];
    uint32_t key_offset = load_le<uint32_t>(entry), value_offset = load_le<uint32_t>(entry + 4);
    uint16_t key_length = load_le<uint16_t>(entry + 8),
             value_length = load_le<uint16_t>(entry + 10);
    if (key_offset == 0 || value_offset == 0 || key_offset > item.size() ||
        key_length > item.size() - key_offset || value_offset > item.size() ||
        value_length > item.size() - value_offset) {
      return corrupt(view, fmt::format("parent locator entry {} points outside the item", index));
    }
    layout.parent_locator.emplace_back(utf16_to_narrow(item.subspan(key_offset, key_length)),
                                       utf16_to_narrow(item.subspan(value_offset, value_length)));
  }
  return {};
}

Result<void> parse_metadata(const FileView& view, const Regions& regions, Layout& layout) {
  std::vector<std::byte> table(kMetadataTableSize);
  if (auto done = view.read(regions.metadata_offset, table, "metadata table"); !done)
    return fail(done.error());
  auto entries = decode_metadata_table(table);
  if (!entries) return fail(entries.error().with_context(view.file().name()));
  std::vector<Extent> extents = {{0, kMetadataTableSize, "the metadata table"}};
  bool seen_parameters = false, seen_size = false, seen_logical = false, seen_physical = false,
       seen_locator = false;
  std::vector<std::pair<Guid, bool>> seen;
  for (const MetadataEntry& entry : *entries) {
    if (std::ranges::find(seen, std::make_pair(entry.item, entry.is_user)) != seen.end()) {
      return corrupt(view, fmt::format("metadata item {} appears twice", entry.item.to_string()));
    }
    seen.emplace_back(entry.item, entry.is_user);
    if (entry.length > kMaxMetadataItemSize || (entry.length == 0 && entry.offset != 0) ||
        (entry.length != 0 &&
         (entry.offset < kMetadataTableSize || entry.offset > regions.metadata_length ||
          entry.length > regions.metadata_length - entry.offset))) {
      return corrupt(
          view, fmt::format("metadata item {} at {:#x} ({} bytes) lies outside the metadata region",
                            entry.item.to_string(), entry.offset, entry.length));
    }
    if (entry.length != 0)
      extents.push_back({entry.offset, entry.length, "metadata item " + entry.item.to_string()});
    std::vector<std::byte> item(entry.length);
    if (auto done = view.read(regions.metadata_offset + entry.offset, item, "metadata item"); !done)
      return fail(done.error());
    auto need = [&](size_t bytes) -> Result<void> {
      if (item.size() < bytes)
        return corrupt(view, fmt::format("metadata item {} is too short", entry.item.to_string()));
      return {};
    };
    Result<void> sized{};
    if (entry.item == kFileParametersItem && !entry.is_user) {
      if (sized = need(8); sized) {
        layout.block_size = load_le<uint32_t>(&item[0]);
        uint32_t flags = load_le<uint32_t>(&item[4]);
        layout.leave_block_allocated = (flags & 1) != 0;
        layout.has_parent = (flags & 2) != 0;
        seen_parameters = true;
      }
    } else if (entry.item == kVirtualDiskSizeItem && !entry.is_user) {
      if (sized = need(8); sized) {
        layout.virtual_size = load_le<uint64_t>(&item[0]);
        layout.virtual_size_item = regions.metadata_offset + entry.offset;
        seen_size = true;
      }
    } else if (entry.item == kLogicalSectorSizeItem && !entry.is_user) {
      if (sized = need(4); sized)
        layout.logical_sector_size = load_le<uint32_t>(&item[0]), seen_logical = true;
    } else if (entry.item == kPhysicalSectorSizeItem && !entry.is_user) {
      if (sized = need(4); sized)
        layout.physical_sector_size = load_le<uint32_t>(&item[0]), seen_physical = true;
    } else if (entry.item == kVirtualDiskIdItem && !entry.is_user) {
      if (sized = need(16); sized) layout.virtual_disk_id = load_guid(item.data());
    } else if (entry.item == kParentLocatorItem && !entry.is_user) {
      sized = parse_parent_locator(view, item, layout);
      seen_locator = true;
    } else if (entry.is_required) {
      return fail(ErrorCode::kUnsupported,
                  fmt::format("{}: required metadata item {} is unknown to Lamina",
                              view.file().name(), entry.item.to_string()));
    }
    if (!sized) return sized;
  }
  if (auto overlap = find_overlap(extents)) {
    return corrupt(view, fmt::format("{} overlaps {}", overlap->second.describe(), overlap->first.describe()));
  }
  if (!seen_parameters || !seen_size || !seen_logical || !seen_physical) {
    return corrupt(
        view,
        "metadata lacks a required item (file parameters, virtual disk size or sector sizes)");
  }
  if (layout.has_parent && !seen_locator)
    return corrupt(view, "differencing disk without a parent locator");
  // Sections 2.6.2.1, 2.6.2.2, 2.6.2.4, 2.6.2.5.
  if (layout.block_size < kMinBlockSize || layout.block_size > kMaxBlockSize ||
      !std::has_single_bit(layout.block_size)) {
    return corrupt(view, fmt::format("block size {} is not a power of two from 1 MiB to 256 MiB",
                                     layout.block_size));
  }
  if ((layout.logical_sector_size != 512 && layout.logical_sector_size != 4096) ||
      (layout.physical_sector_size != 512 && layout.physical_sector_size != 4096)) {
    return corrupt(view, fmt::format("sector sizes {}/{} are not 512 or 4096",
                                     layout.logical_sector_size, layout.physical_sector_size));
  }
  if (layout.virtual_size == 0 || layout.virtual_size > kMaxVirtualSize ||
      layout.virtual_size % layout.logical_sector_size != 0) {
    return corrupt(view,
                   fmt::format("virtual disk size {} is zero, above 64 TiB or not whole sectors",
                               layout.virtual_size));
  }
  return {};
}

}  // namespace

std::string Layout::locator(std::string_view key) const {
  for (const auto& [name, value] : parent_locator) {
    if (name == key) return value;
  }
  return {};
}

Result<void> FileView::read(uint64_t offset, std::span<std::byte> data,
                            std::string_view what) const {
  if (!overlay_) return file_.read_at(offset, data, what);
  if (!contains(offset, data.size()))
    return file_.read_at(offset, data, what);  // reports the overrun
  uint64_t inside =
      offset < file_.size() ? std::min<uint64_t>(data.size(), file_.size() - offset) : 0;
  if (inside != 0) {
    if (auto done = file_.read_at(offset, data.first(inside), what); !done) return done;
  }
  std::fill(data.begin() + static_cast<std::ptrdiff_t>(inside), data.end(), std::byte{0});
  overlay_->apply(offset, data);
  return {};
}

Result<Header> read_current_header(const HostFile& file, int& slot) {
  auto corrupt_file = [&](std::string_view what) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: {}", file.name(), what));
  };
  if (file.size() < kHeaderSectionSize)
    return corrupt_file("file is smaller than the 1 MiB VHDX header section");
  std::array<std::byte, 8> signature{};
  if (auto done = file.read_at(0, signature, "file identifier"); !done) return fail(done.error());
  if (std::string_view(reinterpret_cast<const char*>(signature.data()), 8) != kFileSignature) {
    return corrupt_file("not a VHDX file (no \"vhdxfile\" identifier)");
  }
  std::optional<Header> headers[2];
  std::vector<std::byte> raw(kHeaderSize);
  for (int index = 0; index < 2; ++index) {
    if (auto done = file.read_at(kHeaderOffsets[index], raw, "header"); !done)
      return fail(done.error());
    headers[index] = decode_header(raw);
  }
  // Section 2.2.2.1: the valid header with the greater sequence number is current.
  if (!headers[0] && !headers[1])
    return corrupt_file("both headers are damaged (bad signature or checksum)");
  slot = !headers[0]                                                 ? 1
         : !headers[1]                                               ? 0
         : headers[1]->sequence_number > headers[0]->sequence_number ? 1
                                                                     : 0;
  Header header = *headers[slot];
  if (header.version != 1 || header.log_version != 0) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: VHDX version {} (log version {}) is not supported", file.name(),
                            header.version, header.log_version));
  }
  return header;
}

Result<ParsedImage> parse_image(const FileView& view, const Header& header, int header_slot) {
  auto regions = parse_regions(view, header);
  if (!regions) return fail(regions.error());
  ParsedImage parsed;
  Layout& layout = parsed.layout;
  layout.header = header;
  layout.header_slot = header_slot;
  layout.bat_offset = regions->bat_offset;
  layout.bat_length = regions->bat_length;
  layout.metadata_offset = regions->metadata_offset;
  layout.metadata_length = regions->metadata_length;
  if (auto done = parse_metadata(view, *regions, layout); !done) return fail(done.error());

  // Section 2.5: chunk ratio, payload blocks and BAT entries.
  layout.chunk_ratio = ((1ull << 23) * layout.logical_sector_size) / layout.block_size;
  layout.data_blocks = (layout.virtual_size + layout.block_size - 1) / layout.block_size;
  uint64_t bitmap_blocks = (layout.data_blocks + layout.chunk_ratio - 1) / layout.chunk_ratio;
  layout.bat_entries = layout.has_parent
                           ? bitmap_blocks * (layout.chunk_ratio + 1)
                           : layout.data_blocks + (layout.data_blocks - 1) / layout.chunk_ratio;
  if (layout.bat_entries * 8 > layout.bat_length) {
    return corrupt(view,
                   fmt::format("BAT region of {} bytes cannot hold the {} entries the disk needs",
                               layout.bat_length, layout.bat_entries));
  }
  std::vector<std::byte> raw(layout.bat_entries * 8);
  if (auto done = view.read(layout.bat_offset, raw, "BAT"); !done) return fail(done.error());
  parsed.bat.resize(layout.bat_entries);
  std::vector<Extent> extents = {
      {0, kHeaderSectionSize, "the header section"},
      {layout.bat_offset, layout.bat_length, "the BAT region"},
      {layout.metadata_offset, layout.metadata_length, "the metadata region"}};
  if (!header.log_guid.is_zero() || header.log_length != 0)
    extents.push_back({header.log_offset, header.log_length, "the log"});
  for (uint64_t index = 0; index < layout.bat_entries; ++index) {
    uint64_t entry = load_le<uint64_t>(&raw[index * 8]);
    parsed.bat[index] = entry;
    bool is_bitmap = (index + 1) % (layout.chunk_ratio + 1) == 0;
    BlockState state = bat_state(entry);
    uint64_t offset = bat_file_offset(entry);
    if (is_bitmap) {
      // Section 2.5.1.2: NOT_PRESENT (0) or PRESENT (6).
      if (state != BlockState::kNotPresent && state != BlockState::kFullyPresent) {
        return corrupt(
            view, fmt::format("sector bitmap BAT entry {} has invalid state {}", index, entry & 7));
      }
      if (state == BlockState::kFullyPresent) {
        if (!view.contains(offset, kSectorBitmapBlockSize)) {
          return corrupt(
              view, fmt::format("sector bitmap block (BAT entry {}) at {:#x} lies outside the file",
                                index, offset));
        }
        extents.push_back({offset, kSectorBitmapBlockSize, {}, index, true});
      }
      continue;
    }
    uint8_t raw_state = static_cast<uint8_t>(entry & 7);
    if (raw_state == 4 || raw_state == 5 ||
        (state == BlockState::kPartiallyPresent && !layout.has_parent)) {
      return corrupt(view,
                     fmt::format("payload BAT entry {} has invalid state {}", index, raw_state));
    }
    if (state == BlockState::kFullyPresent || state == BlockState::kPartiallyPresent) {
      uint64_t block = index - index / (layout.chunk_ratio + 1);
      uint64_t needed =
          std::min<uint64_t>(layout.block_size, layout.virtual_size - block * layout.block_size);
      if (!view.contains(offset, needed)) {
        return corrupt(
            view, fmt::format("payload block {} at {:#x} lies outside the file", block, offset));
      }
      extents.push_back({offset, needed, {}, block, false});
    }
  }
  if (auto overlap = find_overlap(std::move(extents))) {
    return corrupt(view, fmt::format("{} overlaps {}", overlap->second.describe(),
                                     overlap->first.describe()));
  }
  return parsed;
}

}  // namespace lamina::storage::vhdx
