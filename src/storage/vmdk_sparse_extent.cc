#include "storage/vmdk_sparse_extent.h"

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <cstring>

#include "base/byte_order.h"
#include "storage/inflate.h"
#include "storage/vmdk_descriptor.h"

namespace lamina::storage {

namespace {

constexpr uint32_t kMagic = 0x564d444b;  // "KDMV" little-endian
constexpr uint64_t kDirectoryAtEnd = ~0ull;
constexpr uint32_t kRedundantTableFlag = 1u << 1;
constexpr uint32_t kZeroedGrainFlag = 1u << 2;
// Bounds no VMDK writer exceeds: 32 MiB grains, 64 Ki entries per grain table, 2^48 sectors.
constexpr uint64_t kMaxGrainSectors = 1u << 16;
constexpr uint32_t kMaxEntriesPerTable = 1u << 16;
constexpr uint64_t kMaxCapacitySectors = 1ull << 48;
constexpr size_t kTableCacheBytes = 16u << 20;
constexpr size_t kGrainMarkerBytes = 12;  // lba (8) + compressed size (4)

std::unexpected<Error> corrupt(const HostFile& file, std::string_view what) {
  return fail(ErrorCode::kCorrupt, fmt::format("{}: {}", file.name(), what));
}

VmdkSparseHeader decode_header(std::span<const std::byte, 512> raw) {
  VmdkSparseHeader header;
  header.version = load_le<uint32_t>(&raw[4]);
  header.flags = load_le<uint32_t>(&raw[8]);
  header.capacity_sectors = load_le<uint64_t>(&raw[12]);
  header.grain_sectors = load_le<uint64_t>(&raw[20]);
  header.descriptor_offset = load_le<uint64_t>(&raw[28]);
  header.descriptor_sectors = load_le<uint64_t>(&raw[36]);
  header.entries_per_table = load_le<uint32_t>(&raw[44]);
  header.redundant_directory_offset = load_le<uint64_t>(&raw[48]);
  header.directory_offset = load_le<uint64_t>(&raw[56]);
  header.compress_algorithm = load_le<uint16_t>(&raw[77]);
  return header;
}

}  // namespace

bool looks_like_vmdk_sparse(std::span<const std::byte> first_bytes) {
  return first_bytes.size() >= 4 && load_le<uint32_t>(first_bytes.data()) == kMagic;
}

Result<std::unique_ptr<VmdkSparseExtent>> VmdkSparseExtent::open(HostFile file) {
  std::array<std::byte, 512> raw{};
  if (file.size() < raw.size()) return corrupt(file, "file is too small for a VMDK sparse header");
  if (auto done = file.read_at(0, raw, "sparse extent header"); !done) return fail(done.error());
  if (!looks_like_vmdk_sparse(raw)) return corrupt(file, "not a VMDK sparse extent (bad magic)");
  VmdkSparseHeader header = decode_header(raw);
  if (header.version < 1 || header.version > 3) {
    return fail(ErrorCode::kUnsupported, fmt::format("{}: VMDK sparse version {} is not supported",
                                                     file.name(), header.version));
  }
  // Stream-optimized images put the grain directory offset in a footer near the end
  // (spec: "the footer ... is a copy of the header with gdOffset set").
  if (header.directory_offset == kDirectoryAtEnd) {
    if (file.size() < 1536)
      return corrupt(file, "grain directory is at the end but the file has no footer");
    std::array<std::byte, 512> footer{};
    if (auto done = file.read_at(file.size() - 1024, footer, "footer"); !done)
      return fail(done.error());
    if (!looks_like_vmdk_sparse(footer))
      return corrupt(file, "footer (second-to-last sector) has no KDMV magic");
    VmdkSparseHeader from_footer = decode_header(footer);
    if (from_footer.directory_offset == kDirectoryAtEnd)
      return corrupt(file, "footer does not say where the grain directory is");
    header = from_footer;
  }
  if (header.grain_sectors == 0 || header.grain_sectors > kMaxGrainSectors ||
      (header.grain_sectors & (header.grain_sectors - 1)) != 0) {
    return corrupt(file, fmt::format("grain size of {} sectors is not a power of two up to 32 MiB",
                                     header.grain_sectors));
  }
  if (header.entries_per_table == 0 || header.entries_per_table > kMaxEntriesPerTable) {
    return corrupt(file, fmt::format("{} entries per grain table is outside 1..65536",
                                     header.entries_per_table));
  }
  if (header.capacity_sectors > kMaxCapacitySectors) {
    return corrupt(file,
                   fmt::format("capacity of {} sectors is too large", header.capacity_sectors));
  }
  if ((header.flags & kCompressedFlag) && header.compress_algorithm != 1) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: compression algorithm {} is not supported (only deflate)",
                            file.name(), header.compress_algorithm));
  }
  // The embedded descriptor, when there is one, must lie inside the file.
  if (header.descriptor_offset != 0 &&
      (header.descriptor_offset > file.size() / 512 ||
       header.descriptor_sectors > kMaxVmdkDescriptorBytes / 512 ||
       !file.contains(header.descriptor_offset * 512, header.descriptor_sectors * 512))) {
    return corrupt(
        file, fmt::format("embedded descriptor at sector {} ({} sectors) lies outside the file",
                          header.descriptor_offset, header.descriptor_sectors));
  }
  if (header.descriptor_offset == 0) header.descriptor_sectors = 0;
  std::unique_ptr<VmdkSparseExtent> extent(new VmdkSparseExtent(std::move(file), header));
  if (auto loaded = extent->load_directory(); !loaded) return fail(loaded.error());
  return extent;
}

Result<std::string> VmdkSparseExtent::embedded_descriptor() const {
  if (header_.descriptor_offset == 0 || header_.descriptor_sectors == 0) return std::string();
  if (header_.descriptor_sectors > kMaxVmdkDescriptorBytes / 512) {
    return corrupt(file_, fmt::format("embedded descriptor of {} sectors is too large",
                                      header_.descriptor_sectors));
  }
  if (header_.descriptor_offset > file_.size() / 512)
    return corrupt(file_, "embedded descriptor lies outside the file");
  std::string text(header_.descriptor_sectors * 512, '\0');
  if (auto done = file_.read_at(header_.descriptor_offset * 512,
                                std::as_writable_bytes(std::span(text)), "descriptor");
      !done) {
    return fail(done.error());
  }
  return text;
}

bool VmdkSparseExtent::overlaps_metadata(uint64_t offset, uint64_t length) const {
  auto overlaps = [&](uint64_t start, uint64_t size) {
    return offset < start + size && start < offset + length;
  };
  return overlaps(0, 512) || overlaps(directory_start_, directory_bytes_) ||
         overlaps(header_.descriptor_offset * 512, header_.descriptor_sectors * 512);
}

Result<std::vector<uint32_t>> VmdkSparseExtent::read_directory(uint64_t offset_sectors) const {
  if (offset_sectors == 0 || offset_sectors > file_.size() / 512 ||
      !file_.contains(offset_sectors * 512, directory_bytes_)) {
    return corrupt(file_,
                   fmt::format("grain directory at sector {} ({} bytes) lies outside the file",
                               offset_sectors, directory_bytes_));
  }
  std::vector<std::byte> raw(directory_bytes_);
  if (auto done = file_.read_at(offset_sectors * 512, raw, "grain directory"); !done)
    return fail(done.error());
  std::vector<uint32_t> directory(directory_bytes_ / 4);
  for (size_t index = 0; index < directory.size(); ++index) {
    directory[index] = load_le<uint32_t>(&raw[index * 4]);
    uint64_t table = directory[index];
    if (table != 0 && (table > file_.size() / 512 ||
                       !file_.contains(table * 512, uint64_t{header_.entries_per_table} * 4))) {
      return corrupt(file_,
                     fmt::format("grain directory entry {} points at sector {}, outside the file",
                                 index, table));
    }
  }
  return directory;
}

Result<void> VmdkSparseExtent::load_directory() {
  uint64_t span_sectors = header_.grain_sectors * header_.entries_per_table;
  uint64_t entries = (header_.capacity_sectors + span_sectors - 1) / span_sectors;
  directory_bytes_ = entries * 4;
  // The directory lives in the file, so a directory larger than the file is a lie.
  if (directory_bytes_ > file_.size()) {
    return corrupt(file_,
                   fmt::format("grain directory of {} entries cannot fit in the file", entries));
  }
  auto primary = read_directory(header_.directory_offset);
  if (primary) {
    directory_ = std::move(*primary);
    directory_start_ = header_.directory_offset * 512;
    return {};
  }
  // The redundant copy is there for exactly this (spec: "redundant grain directory").
  if ((header_.flags & kRedundantTableFlag) && header_.redundant_directory_offset != 0) {
    auto redundant = read_directory(header_.redundant_directory_offset);
    if (redundant) {
      directory_ = std::move(*redundant);
      directory_start_ = header_.redundant_directory_offset * 512;
      return {};
    }
  }
  return fail(primary.error());
}

Result<const std::vector<uint32_t>*> VmdkSparseExtent::grain_table(uint64_t directory_index) {
  if (auto found = table_cache_.find(directory_index); found != table_cache_.end())
    return &found->second;
  size_t table_bytes = size_t{header_.entries_per_table} * 4;
  if ((table_cache_.size() + 1) * table_bytes > kTableCacheBytes) table_cache_.clear();
  uint64_t offset = uint64_t{directory_[directory_index]} * 512;
  if (overlaps_metadata(offset, table_bytes)) {
    return corrupt(file_,
                   fmt::format("grain table {} at {:#x} overlaps the header or grain directory",
                               directory_index, offset));
  }
  std::vector<std::byte> raw(table_bytes);
  if (auto done = file_.read_at(offset, raw, "grain table"); !done) return fail(done.error());
  std::vector<uint32_t> table(header_.entries_per_table);
  for (size_t index = 0; index < table.size(); ++index)
    table[index] = load_le<uint32_t>(&raw[index * 4]);
  return &table_cache_.emplace(directory_index, std::move(table)).first->second;
}

Result<void> VmdkSparseExtent::inflate_grain(uint64_t grain_index, uint64_t sector) {
  std::array<std::byte, kGrainMarkerBytes> marker{};
  uint64_t offset = sector * 512;
  if (auto done = file_.read_at(offset, marker, "compressed grain marker"); !done) return done;
  uint64_t lba = load_le<uint64_t>(&marker[0]);
  uint32_t size = load_le<uint32_t>(&marker[8]);
  // Deflate never grows data by more than a few bytes per 16 KiB block.
  if (size == 0 || size > 2 * grain_bytes() + 1024) {
    return corrupt(file_,
                   fmt::format("compressed grain at sector {} claims {} bytes", sector, size));
  }
  if (lba != grain_index * header_.grain_sectors) {
    return corrupt(file_, fmt::format("compressed grain at sector {} is for sector {}, expected {}",
                                      sector, lba, grain_index * header_.grain_sectors));
  }
  compressed_.resize(size);
  if (auto done = file_.read_at(offset + kGrainMarkerBytes, compressed_, "compressed grain"); !done)
    return done;
  grain_.assign(grain_bytes(), std::byte{0});
  grain_sector_ = 0;
  auto produced = inflate_into(compressed_, grain_, InflateFormat::kZlib);
  if (!produced)
    return corrupt(file_,
                   fmt::format("grain at sector {}: {}", sector, produced.error().message()));
  grain_sector_ = sector;
  return {};
}

Result<uint64_t> VmdkSparseExtent::grain_sector(uint64_t grain_index) {
  uint64_t directory_index = grain_index / header_.entries_per_table;
  if (directory_index >= directory_.size() || directory_[directory_index] == 0) return 0;
  auto table = grain_table(directory_index);
  if (!table) return fail(table.error());
  uint64_t sector = (**table)[grain_index % header_.entries_per_table];
  // 0: never written; 1 with flag bit 2: a zeroed grain (spec: "zeroed-grain GTE").
  if (sector == 0 || (sector == 1 && (header_.flags & kZeroedGrainFlag))) return 0;
  if (sector > file_.size() / 512 || overlaps_metadata(sector * 512, 512)) {
    return corrupt(file_,
                   fmt::format("grain {} points at sector {}, outside the file or over metadata",
                               grain_index, sector));
  }
  return sector;
}

Result<size_t> VmdkSparseExtent::read_grains(uint64_t grain_index, uint64_t in_grain,
                                             std::span<std::byte> out) {
  auto sector = grain_sector(grain_index);
  if (!sector) return fail(sector.error());
  size_t length = static_cast<size_t>(std::min<uint64_t>(grain_bytes() - in_grain, out.size()));
  if (*sector == 0) {
    std::ranges::fill(out.first(length), std::byte{0});
    return length;
  }
  if (compressed()) {
    if (grain_sector_ != *sector) {
      if (auto inflated = inflate_grain(grain_index, *sector); !inflated)
        return fail(inflated.error());
    }
    std::memcpy(out.data(), grain_.data() + in_grain, length);
    return length;
  }
  // Grains that follow each other in the file too (as writers lay them out) are one read.
  for (uint64_t next = grain_index + 1; length < out.size(); ++next) {
    auto next_sector = grain_sector(next);
    if (!next_sector) return fail(next_sector.error());
    if (*next_sector != *sector + (next - grain_index) * header_.grain_sectors) break;
    length += static_cast<size_t>(std::min<uint64_t>(grain_bytes(), out.size() - length));
  }
  if (auto done = file_.read_at(*sector * 512 + in_grain, out.first(length), "grain"); !done)
    return fail(done.error());
  return length;
}

Result<BlockDevice::Extent> VmdkSparseExtent::map(uint64_t offset, uint64_t max_length) {
  // Outside the capacity: let the read report it.
  if (offset >= capacity_bytes()) return BlockDevice::Extent{max_length, false};
  max_length = std::min(max_length, capacity_bytes() - offset);
  uint64_t grain = offset / grain_bytes();
  auto first = grain_sector(grain);
  if (!first) return fail(first.error());
  bool zero = *first == 0;
  uint64_t length = std::min(max_length, grain_bytes() - offset % grain_bytes());
  while (length < max_length) {
    ++grain;
    // A whole missing grain table is entries_per_table unallocated grains at once.
    uint64_t directory_index = grain / header_.entries_per_table;
    if (zero && grain % header_.entries_per_table == 0 &&
        (directory_index >= directory_.size() || directory_[directory_index] == 0)) {
      length = std::min(max_length, length + grain_bytes() * header_.entries_per_table);
      grain += header_.entries_per_table - 1;
      continue;
    }
    auto sector = grain_sector(grain);
    if (!sector) return fail(sector.error());
    if ((*sector == 0) != zero) break;
    length = std::min(max_length, length + grain_bytes());
  }
  return BlockDevice::Extent{length, zero};
}

Result<void> VmdkSparseExtent::read(uint64_t offset, std::span<std::byte> out) {
  if (offset > capacity_bytes() || out.size() > capacity_bytes() - offset) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: read past the extent's capacity", file_.name()));
  }
  size_t done = 0;
  while (done < out.size()) {
    uint64_t position = offset + done;
    uint64_t in_grain = position % grain_bytes();
    auto piece = read_grains(position / grain_bytes(), in_grain, out.subspan(done));
    if (!piece) return fail(piece.error());
    done += *piece;
  }
  return {};
}

}  // namespace lamina::storage
