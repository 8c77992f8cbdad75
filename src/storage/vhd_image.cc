#include "storage/vhd_image.h"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

#include "base/byte_order.h"
#include "storage/vhd_layout.h"

namespace lamina::storage {

namespace {

bool bit_set(std::span<const std::byte> bitmap, uint64_t sector) {
  // Spec: the first sector of a block is the most significant bit of the bitmap's first byte.
  return (static_cast<uint8_t>(bitmap[sector / 8]) & (0x80u >> (sector % 8))) != 0;
}

void set_bit(std::span<std::byte> bitmap, uint64_t sector) {
  bitmap[sector / 8] |= std::byte{static_cast<uint8_t>(0x80u >> (sector % 8))};
}

}  // namespace

Result<std::unique_ptr<VhdImage>> VhdImage::open(const std::string& path, Options options) {
  std::set<Identity> seen;
  return open_link(path, options, seen);
}

Result<std::unique_ptr<VhdImage>> VhdImage::open_link(const std::string& path, Options options,
                                                      std::set<Identity>& seen) {
  std::unique_ptr<VhdImage> image(new VhdImage());
  // Links below the top are files the image names: regular files only.
  auto opened = HostFile::open(
      path, options.writable ? HostFile::Mode::kReadWrite : HostFile::Mode::kRead,
      {.force_share = options.access.force_share && !options.writable,
       .regular_only = !seen.empty(),
       .granted = options.access.references.granted});
  if (!opened) return fail(opened.error());
  image->file_ = std::move(*opened);
  if (auto loaded = image->load(options, seen); !loaded) return fail(loaded.error());
  return image;
}

Result<void> VhdImage::load(Options options, std::set<Identity>& seen) {
  const std::string& path = file_.path();
  auto context = [&](const Error& error) { return fail(error.with_context(path)); };
  auto corrupt = [&](std::string message) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: {}", path, message));
  };
  durable_ = options.durable;
  if (!durable_ && options.writable) write_behind_ = std::make_unique<WriteBehind>(file_.descriptor());

  auto identity = file_.identity();
  if (!identity) return fail(identity.error());
  if (!seen.insert(*identity).second) {
    return corrupt("parent loop: this file is already part of the differencing chain");
  }

  uint64_t file_size = file_.size();
  if (file_size < vhd::kFooterSize) {
    return corrupt(fmt::format("file is too small to be a VHD ({} bytes)", file_size));
  }
  std::array<std::byte, vhd::kFooterSize> tail{};
  std::array<std::byte, vhd::kFooterSize> head{};
  if (auto r = file_.read_at(file_size - vhd::kFooterSize, tail); !r) return fail(r.error());
  if (auto r = file_.read_at(0, head); !r) return fail(r.error());
  auto trailing = vhd::parse_footer(tail);
  auto copy = vhd::parse_footer(head);
  if (trailing) {
    footer_ = *trailing;
    footer_offset_ = file_size - vhd::kFooterSize;
  } else if (copy && copy->disk_type != vhd::DiskType::kFixed) {
    // Spec: dynamic disks keep a footer copy at offset 0 for exactly this case.
    if (options.writable) {
      return fail(trailing.error().with_context(path + ": the footer at the end")
                      .with_context("refusing to write (run 'lamina disk check --repair')"));
    }
    footer_ = *copy;
    footer_offset_ = file_size;
    warnings_.push_back("the footer at the end of the file is damaged; using the copy at offset 0");
  } else {
    return context(trailing.error());
  }
  if (footer_.current_size > vhd::kMaxVirtualSize) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: virtual size {} bytes is over the VHD maximum of 2040 GiB", path,
                            footer_.current_size));
  }

  if (footer_.disk_type == vhd::DiskType::kFixed) {
    if (footer_offset_ < footer_.current_size) {
      return corrupt(fmt::format("fixed VHD is truncated: the footer says {} bytes of data but "
                                 "the file holds {}", footer_.current_size, footer_offset_));
    }
    return {};
  }

  if (footer_.data_offset > footer_offset_ ||
      footer_offset_ - footer_.data_offset < vhd::kDynamicHeaderSize) {
    return corrupt(fmt::format("the dynamic header offset {} lies past the end of the file",
                               footer_.data_offset));
  }
  std::array<std::byte, vhd::kDynamicHeaderSize> header_bytes{};
  if (auto r = file_.read_at(footer_.data_offset, header_bytes); !r) return fail(r.error());
  auto header = vhd::parse_dynamic_header(header_bytes);
  if (!header) return context(header.error());
  header_ = *header;
  const uint64_t block_size = header_->block_size;
  bitmap_size_ = vhd::bitmap_size(header_->block_size);
  if (uint64_t{header_->max_table_entries} * block_size < size()) {
    return corrupt(fmt::format("the BAT has {} entries of {} bytes, too few for the virtual size "
                               "of {} bytes", header_->max_table_entries, block_size, size()));
  }
  if (header_->max_table_entries > vhd::kMaxBatEntries) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: the BAT has {} entries, more than Lamina handles ({})", path,
                            header_->max_table_entries, vhd::kMaxBatEntries));
  }
  if (header_->table_offset > footer_offset_ ||
      (footer_offset_ - header_->table_offset) / 4 < header_->max_table_entries) {
    return corrupt(fmt::format("the BAT ({} entries at offset {}) runs past the end of the file",
                               header_->max_table_entries, header_->table_offset));
  }
  auto bat = vhd::read_bat(file_, *header_);
  if (!bat) return fail(bat.error());
  bat_ = std::move(*bat);

  vhd::Layout layout = vhd::analyze_layout(footer_, *header_, bat_, footer_offset_);
  if (!layout.problems.empty()) {
    std::string more = layout.problem_count > 1
                           ? fmt::format(" (and {} more problems)", layout.problem_count - 1)
                           : "";
    return corrupt(layout.problems.front().message + more +
                   "; 'lamina disk check' lists them");
  }
  bitmap_state_.assign(bat_.size(), 0);
  if (footer_offset_ % kSectorSize != 0 && options.writable) {
    return corrupt("the file size is not a whole number of sectors; refusing to write");
  }

  if (!differencing() || !options.open_parent) return {};
  std::vector<std::string> refused;
  std::vector<std::string> candidates =
      parent_candidates(file_, *header_, options.access.references, refused);
  std::string parent_name = vhd::utf16_to_utf8(header_->parent_unicode_name);
  if (candidates.empty()) {
    if (!refused.empty()) return fail(ErrorCode::kInvalidArgument, refused.front());
    return fail(ErrorCode::kNotFound,
                fmt::format("{}: parent disk '{}' not found (looked through the relative and "
                            "absolute parent locators and beside the child)", path, parent_name));
  }
  std::string mismatch;
  for (const std::string& candidate : candidates) {
    Options parent_options{
        .writable = false, .durable = true, .open_parent = true, .access = options.access};
    std::set<Identity> trial = seen;
    auto parent = open_link(candidate, parent_options, trial);
    if (!parent) return fail(parent.error().with_context(path + ": parent"));
    if ((*parent)->footer().unique_id != header_->parent_unique_id) {
      // No ids in the message: the candidate is a file the user did not name, and its id is
      // what a crafted child would need to read it.
      mismatch = fmt::format("{}: parent candidate {} is not this disk's parent (its unique id "
                             "differs from the one the child records)",
                             path, candidate);
      continue;
    }
    seen = std::move(trial);
    parent_ = std::move(*parent);
    parent_path_ = candidate;
    return {};
  }
  return fail(ErrorCode::kCorrupt, mismatch);
}

Result<void> VhdImage::check_range(uint64_t offset, uint64_t length, bool for_write) const {
  if (offset % kSectorSize != 0 || length % kSectorSize != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: offset {} and length {} must be multiples of 512", path(), offset,
                            length));
  }
  if (offset > size() || length > size() - offset) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: range at {} of {} bytes is past the disk's end ({} bytes)", path(),
                            offset, length, size()));
  }
  if (for_write && read_only()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}: opened read-only", path()));
  }
  return {};
}

Result<void> VhdImage::read(uint64_t offset, std::span<std::byte> data) {
  const std::span<std::byte> whole[] = {data};
  return read_scattered(offset, whole);
}

Result<void> VhdImage::read_scattered(uint64_t offset, ScatterList buffers) {
  const uint64_t length = total_bytes(buffers);
  if (auto r = check_range(offset, length, false); !r) return r;
  if (!header_) return file_.read_vectored_at(offset, buffers);
  const uint64_t block_size = header_->block_size;
  ScatterCursor cursor(buffers);
  for (uint64_t left = length; left > 0;) {
    const auto block = static_cast<uint32_t>(offset / block_size);
    const uint64_t in_block = offset % block_size;
    const uint64_t piece = std::min(left, block_size - in_block);
    cursor.take(piece, scattered_pieces_);
    const bool allocated = bat_[block] != vhd::kUnusedBatEntry;
    if (allocated && bitmap_state_[block] == 0) {
      if (auto loaded = read_bitmap(block); !loaded) return fail(loaded.error());
    }
    if (allocated && bitmap_state_[block] == 1) {
      // Every sector present: the block's data is one stretch of the file.
      const uint64_t data_start = uint64_t{bat_[block]} * kSectorSize + bitmap_size_;
      if (auto r = file_.read_vectored_at(data_start + in_block, scattered_pieces_); !r) return r;
    } else {
      uint64_t at = in_block;
      for (const std::span<std::byte>& part : scattered_pieces_) {
        if (auto r = read_block(block, at, part); !r) return r;
        at += part.size();
      }
    }
    offset += piece;
    left -= piece;
  }
  return {};
}

Result<std::vector<std::byte>> VhdImage::read_bitmap(uint32_t block) {
  std::vector<std::byte> bitmap(bitmap_size_);
  if (auto r = file_.read_at(uint64_t{bat_[block]} * kSectorSize, bitmap); !r) {
    return fail(r.error());
  }
  const uint64_t sectors = header_->block_size / kSectorSize;
  bool full = true;
  for (uint64_t s = 0; s < sectors && full; ++s) full = bit_set(bitmap, s);
  bitmap_state_[block] = full ? 1 : 2;
  return bitmap;
}

Result<void> VhdImage::read_beneath(uint64_t offset, std::span<std::byte> data) {
  if (!differencing() || !parent_) {
    std::memset(data.data(), 0, data.size());
    return {};
  }
  // A parent smaller than the child reads as zeros past its end.
  uint64_t parent_size = parent_->size();
  size_t inside = offset >= parent_size ? 0
                                        : static_cast<size_t>(std::min<uint64_t>(
                                              data.size(), parent_size - offset));
  if (inside > 0) {
    if (auto r = parent_->read(offset, data.first(inside)); !r) return r;
  }
  std::memset(data.data() + inside, 0, data.size() - inside);
  return {};
}

Result<void> VhdImage::read_block(uint32_t block, uint64_t in_block, std::span<std::byte> data) {
  const uint64_t block_size = header_->block_size;
  const uint64_t block_start = uint64_t{block} * block_size;
  if (bat_[block] == vhd::kUnusedBatEntry) return read_beneath(block_start + in_block, data);
  const uint64_t data_start = uint64_t{bat_[block]} * kSectorSize + bitmap_size_;
  std::vector<std::byte> bitmap;
  if (bitmap_state_[block] != 1) {
    auto loaded = read_bitmap(block);
    if (!loaded) return fail(loaded.error());
    bitmap = std::move(*loaded);
  }
  if (bitmap_state_[block] == 1) return file_.read_at(data_start + in_block, data);
  // Runs of sectors present here (read from this file) or absent (zeros or the parent).
  uint64_t sector = in_block / kSectorSize;
  const uint64_t end = sector + data.size() / kSectorSize;
  size_t done = 0;
  while (sector < end) {
    bool present = bit_set(bitmap, sector);
    uint64_t run_end = sector + 1;
    while (run_end < end && bit_set(bitmap, run_end) == present) ++run_end;
    auto piece = data.subspan(done, static_cast<size_t>((run_end - sector) * kSectorSize));
    auto r = present ? file_.read_at(data_start + sector * kSectorSize, piece)
                     : read_beneath(block_start + sector * kSectorSize, piece);
    if (!r) return r;
    done += piece.size();
    sector = run_end;
  }
  return {};
}

Result<void> VhdImage::write(uint64_t offset, std::span<const std::byte> data) {
  if (auto r = check_range(offset, data.size(), true); !r) return r;
  if (!header_) {
    if (auto r = file_.write_at(offset, data); !r) return r;
    if (write_behind_) write_behind_->add(offset, data.size());
    return {};
  }
  const uint64_t block_size = header_->block_size;
  while (!data.empty()) {
    auto block = static_cast<uint32_t>(offset / block_size);
    uint64_t in_block = offset % block_size;
    size_t length = static_cast<size_t>(std::min<uint64_t>(data.size(), block_size - in_block));
    if (auto r = write_block(block, in_block, data.first(length)); !r) return r;
    data = data.subspan(length);
    offset += length;
  }
  return {};
}

Result<void> VhdImage::write_block(uint32_t block, uint64_t in_block,
                                   std::span<const std::byte> data) {
  if (bat_[block] == vhd::kUnusedBatEntry) {
    // An unallocated block of a dynamic disk already reads as zeros.
    if (!differencing() && is_all_zero(data)) return {};
    return allocate_block(block, in_block, data);
  }
  const uint64_t block_offset = uint64_t{bat_[block]} * kSectorSize;
  if (auto r = file_.write_at(block_offset + bitmap_size_ + in_block, data); !r) return r;
  if (bitmap_state_[block] == 1) return {};
  auto bitmap = read_bitmap(block);
  if (!bitmap) return fail(bitmap.error());
  if (bitmap_state_[block] == 1) return {};
  bool changed = false;
  for (uint64_t s = in_block / kSectorSize; s < (in_block + data.size()) / kSectorSize; ++s) {
    if (!bit_set(*bitmap, s)) {
      set_bit(*bitmap, s);
      changed = true;
    }
  }
  if (!changed) return {};
  // The data must be durable before the bitmap bit that exposes it (crash consistency).
  if (durable_) {
    if (auto r = file_.flush(); !r) return r;
  }
  if (auto r = file_.write_at(block_offset, *bitmap); !r) return r;
  bitmap_state_[block] = 0;
  return {};
}

Result<void> VhdImage::allocate_block(uint32_t block, uint64_t in_block,
                                      std::span<const std::byte> data) {
  const uint64_t block_size = header_->block_size;
  const uint64_t start = footer_offset_;
  const uint64_t new_footer_offset = start + bitmap_size_ + block_size;
  if (start / kSectorSize >= vhd::kUnusedBatEntry) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: the file reached the VHD limit of 2 TiB of blocks", path()));
  }
  // The new block goes where the trailing footer is, so the steps are ordered for a power cut
  // at any point (the file must always end with a valid footer, and the BAT never point at
  // unwritten data):
  // 1. the footer at the new end, then fdatasync: the file grows to its new size ending in a
  //    valid footer (a write that extends the file could otherwise land alone and end it in
  //    data; the old footer, now mid-file, is unused space).
  // 2. bitmap (over the old footer's place) and data, then fdatasync: nothing points there yet.
  // 3. the BAT entry (durable with the next flush; losing it loses only unflushed data).
  // A staged file (not durable) appends in file order and syncs once at the end instead.
  auto footer_bytes = vhd::serialize_footer(footer_);
  // A dynamic disk's block is whole (all bits set, unwritten sectors are the zeros of the
  // freshly extended file); a differencing disk marks only the sectors written, the rest still
  // come from the parent.
  std::vector<std::byte> bitmap(bitmap_size_, std::byte{0});
  if (differencing()) {
    for (uint64_t s = in_block / kSectorSize; s < (in_block + data.size()) / kSectorSize; ++s) {
      set_bit(bitmap, s);
    }
  } else {
    std::fill(bitmap.begin(), bitmap.begin() + static_cast<ptrdiff_t>(block_size / kSectorSize / 8),
              std::byte{0xff});
  }
  if (durable_) {
    if (auto r = file_.write_at(new_footer_offset, footer_bytes); !r) return r;
    if (auto r = file_.flush(); !r) return r;
    if (auto r = file_.write_at(start, bitmap); !r) return r;
    if (auto r = file_.write_at(start + bitmap_size_ + in_block, data); !r) return r;
    if (auto r = file_.flush(); !r) return r;
  } else {
    if (auto r = file_.write_at(start, bitmap); !r) return r;
    if (auto r = file_.write_at(start + bitmap_size_ + in_block, data); !r) return r;
    if (auto r = file_.write_at(new_footer_offset, footer_bytes); !r) return r;
    if (write_behind_) write_behind_->add(start, new_footer_offset - start);
  }
  // The BAT entry.
  std::array<std::byte, 4> entry{};
  store_be<uint32_t>(entry.data(), static_cast<uint32_t>(start / kSectorSize));
  if (auto r = file_.write_at(header_->table_offset + uint64_t{block} * 4, entry); !r) return r;
  bat_[block] = static_cast<uint32_t>(start / kSectorSize);
  bitmap_state_[block] = 0;
  footer_offset_ = new_footer_offset;
  return {};
}

Result<void> VhdImage::flush() {
  if (read_only()) return {};
  if (write_behind_) write_behind_->drain();
  return file_.flush();
}

Result<void> VhdImage::discard(uint64_t offset, uint64_t length) {
  if (auto r = check_range(offset, length, true); !r) return r;
  if (!header_) {
    (void)file_.punch_hole(offset, length);  // best effort: content after discard is unspecified
    return {};
  }
  if (differencing()) return {};  // dropping a block would expose the parent's data
  const uint64_t block_size = header_->block_size;
  uint64_t first = (offset + block_size - 1) / block_size;
  uint64_t end = (offset + length) / block_size;
  for (uint64_t block = first; block < end; ++block) {
    if (auto r = unallocate_block(static_cast<uint32_t>(block)); !r) return r;
  }
  return {};
}

Result<void> VhdImage::unallocate_block(uint32_t block) {
  if (bat_[block] == vhd::kUnusedBatEntry) return {};
  uint64_t block_offset = uint64_t{bat_[block]} * kSectorSize;
  std::array<std::byte, 4> entry{};
  store_be<uint32_t>(entry.data(), vhd::kUnusedBatEntry);
  if (auto r = file_.write_at(header_->table_offset + uint64_t{block} * 4, entry); !r) return r;
  bat_[block] = vhd::kUnusedBatEntry;
  // The space stays in the file until 'lamina disk compact'; the hole only saves host space.
  // Either order of the two reaching the disk reads as zeros.
  (void)file_.punch_hole(block_offset, bitmap_size_ + header_->block_size);
  return {};
}

Result<void> VhdImage::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (auto r = check_range(offset, length, true); !r) return r;
  // A fixed disk's data area is the virtual disk, byte for byte.
  if (!header_) return file_.zero(offset, length, may_unmap);
  if (differencing()) return BlockDevice::write_zeroes(offset, length, may_unmap);
  const uint64_t block_size = header_->block_size;
  while (length > 0) {
    auto block = static_cast<uint32_t>(offset / block_size);
    uint64_t in_block = offset % block_size;
    uint64_t piece = std::min(length, block_size - in_block);
    uint64_t block_end = std::min(size(), uint64_t{block + 1} * block_size);
    if (bat_[block] != vhd::kUnusedBatEntry) {
      if (may_unmap && in_block == 0 && offset + piece == block_end) {
        if (auto r = unallocate_block(block); !r) return r;
      } else {
        // Every sector of a dynamic disk's block reads from the file (absent ones as zeros),
        // so zeroing the file range is enough; the bitmap does not change.
        uint64_t data = uint64_t{bat_[block]} * kSectorSize + bitmap_size_ + in_block;
        if (auto r = file_.zero(data, piece, may_unmap); !r) return r;
      }
    }
    offset += piece;
    length -= piece;
  }
  return {};
}

Result<BlockDevice::Extent> VhdImage::map_extent(uint64_t offset, uint64_t max_length) {
  max_length = std::min(max_length, size() - offset);
  if (!header_) {
    auto data = file_.next_data(offset);
    if (!data) return Extent{max_length, false};
    if (*data > offset) return Extent{std::min(max_length, *data - offset), true};
    auto hole = file_.next_hole(offset);
    if (!hole || *hole <= offset) return Extent{max_length, false};
    return Extent{std::min(max_length, *hole - offset), false};
  }
  const uint64_t block_size = header_->block_size;
  auto block = static_cast<uint32_t>(offset / block_size);
  uint64_t length = std::min(max_length, block_size - offset % block_size);
  if (bat_[block] != vhd::kUnusedBatEntry) {
    for (uint64_t next = block + 1; length < max_length && next < bat_.size() &&
                                    bat_[next] != vhd::kUnusedBatEntry; ++next) {
      length = std::min(max_length, length + block_size);
    }
    return Extent{length, false};
  }
  if (differencing() && parent_) {
    if (offset >= parent_->size()) return Extent{length, true};
    return parent_->map_extent(offset, std::min(length, parent_->size() - offset));
  }
  for (uint64_t next = block + 1; length < max_length && next < bat_.size() &&
                                  bat_[next] == vhd::kUnusedBatEntry; ++next) {
    length = std::min(max_length, length + block_size);
  }
  return Extent{length, true};
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> VhdImage::own_sector_runs(uint32_t block) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  if (!header_ || block >= bat_.size() || bat_[block] == vhd::kUnusedBatEntry) return runs;
  auto bitmap = read_bitmap(block);
  if (!bitmap) return fail(bitmap.error());
  const uint64_t per_block = header_->block_size / kSectorSize;
  const uint64_t first = uint64_t{block} * per_block;
  const uint64_t limit = std::min(per_block, size() / kSectorSize - std::min(size() / kSectorSize, first));
  for (uint64_t s = 0; s < limit;) {
    if (!bit_set(*bitmap, s)) {
      ++s;
      continue;
    }
    uint64_t end = s + 1;
    while (end < limit && bit_set(*bitmap, end)) ++end;
    runs.emplace_back(first + s, end - s);
    s = end;
  }
  return runs;
}

}  // namespace lamina::storage
