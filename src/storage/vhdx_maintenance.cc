// VhdxDevice's whole-image side (declared in vhdx_device.h): the extent map copies use, the
// runs a file itself defines (compact, merge), and resizing in place.
#include <fmt/format.h>
#include <algorithm>

#include "base/byte_order.h"
#include "storage/vhdx_device.h"

namespace lamina::storage::vhdx {

namespace {

enum class Content { kZero, kData, kParent };

// The number of BAT entries of a disk without a parent (2.5: a sector bitmap entry follows
// every chunk_ratio payload entries, none after the last).
uint64_t entries_without_parent(uint64_t blocks, uint64_t chunk_ratio) {
  return blocks + (blocks - 1) / chunk_ratio;
}

}  // namespace

Result<BlockDevice::Extent> VhdxDevice::map_extent(uint64_t offset, uint64_t max_length) {
  max_length = std::min(max_length, size() - offset);
  auto content = [&](uint64_t block) {
    switch (bat_state(bat_[layout_.payload_index(block)])) {
      case BlockState::kFullyPresent:
      case BlockState::kPartiallyPresent: return Content::kData;
      case BlockState::kNotPresent: return parent_ ? Content::kParent : Content::kZero;
      default: return Content::kZero;
    }
  };
  uint64_t block = offset / layout_.block_size;
  uint64_t length = std::min(max_length, layout_.block_size - offset % layout_.block_size);
  Content here = content(block);
  if (here == Content::kParent) {
    if (offset >= parent_->size()) return Extent{length, true};
    return parent_->map_extent(offset, std::min(length, parent_->size() - offset));
  }
  for (uint64_t next = block + 1; length < max_length && next < layout_.data_blocks &&
                                  content(next) == here;
       ++next) {
    length = std::min(max_length, length + layout_.block_size);
  }
  return Extent{length, here == Content::kZero};
}

Result<std::vector<VhdxDevice::OwnRun>> VhdxDevice::own_runs(uint64_t block) {
  std::vector<OwnRun> runs;
  if (block >= layout_.data_blocks) return runs;
  uint64_t start = block * layout_.block_size;
  uint64_t end = std::min(size(), start + layout_.block_size);
  switch (bat_state(bat_[layout_.payload_index(block)])) {
    case BlockState::kFullyPresent: runs.push_back({start, end - start, false}); return runs;
    case BlockState::kNotPresent: return runs;
    case BlockState::kPartiallyPresent: break;
    default:
      // ZERO, UNMAPPED, UNDEFINED read as zeros here; on a differencing disk that hides the parent.
      if (layout_.has_parent) runs.push_back({start, end - start, true});
      return runs;
  }
  // Section 2.4: one bit per logical sector of the chunk, 1 meaning "in this file".
  uint64_t sector_size = layout_.logical_sector_size;
  uint64_t chunk_bytes = (1ull << 23) * sector_size;
  auto bitmap = sector_bitmap(start / chunk_bytes);
  if (!bitmap) return fail(bitmap.error());
  auto present = [&](uint64_t position) {
    uint64_t bit = (position % chunk_bytes) / sector_size;
    return ((static_cast<unsigned>((**bitmap)[bit / 8]) >> (bit % 8)) & 1u) != 0;
  };
  for (uint64_t position = start; position < end;) {
    if (!present(position)) {
      position += sector_size;
      continue;
    }
    uint64_t run_end = position + sector_size;
    while (run_end < end && present(run_end)) run_end += sector_size;
    runs.push_back({position, std::min(run_end, end) - position, false});
    position = run_end;
  }
  return runs;
}

bool VhdxDevice::bat_fits(uint64_t new_size) const {
  uint64_t blocks = (new_size + layout_.block_size - 1) / layout_.block_size;
  return entries_without_parent(blocks, layout_.chunk_ratio) * 8 <= layout_.bat_length;
}

Result<void> VhdxDevice::resize(uint64_t new_size) {
  if (layout_.has_parent) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: a differencing disk keeps its parent's size", file_.name()));
  }
  if (new_size == 0 || new_size > kMaxVirtualSize || new_size % layout_.logical_sector_size != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: new size {} must be a non-zero multiple of {} bytes, at most "
                            "64 TiB (MS-VHDX 2.6.2.2)",
                            file_.name(), new_size, layout_.logical_sector_size));
  }
  if (!bat_fits(new_size)) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: the BAT region has no room for {} bytes", file_.name(), new_size));
  }
  if (new_size == size()) return {};
  if (auto started = begin_session(); !started) return started;
  const uint64_t block_size = layout_.block_size;
  const uint64_t old_size = size();
  const uint64_t old_blocks = layout_.data_blocks;
  const uint64_t new_blocks = (new_size + block_size - 1) / block_size;
  const uint64_t old_entries = layout_.bat_entries;
  const uint64_t new_entries = entries_without_parent(new_blocks, layout_.chunk_ratio);
  std::vector<PendingPage> pages;
  std::vector<uint64_t> new_bat = bat_;
  new_bat.resize(new_entries, 0);
  auto stage_size = [&]() -> Result<void> {
    auto target = pending_page(pages, layout_.virtual_size_item);
    if (!target) return fail(target.error());
    store_le<uint64_t>(*target, new_size);
    return {};
  };
  if (new_size > old_size) {
    // The old last block's bytes past the old end become visible, and only its used part was
    // checked against the other structures: its data moves to a fresh block with zeros after.
    uint64_t last_index = layout_.payload_index(old_blocks - 1);
    uint64_t tail = old_size - (old_blocks - 1) * block_size;
    if (bat_state(bat_[last_index]) == BlockState::kFullyPresent && tail < block_size) {
      std::vector<std::byte> data(tail);
      if (auto read = file_.read_at(bat_file_offset(bat_[last_index]), data, "payload block");
          !read)
        return read;
      auto fresh = append_zeroed(block_size);
      if (!fresh) return fail(fresh.error());
      if (auto written = file_.write_at(*fresh, data); !written) return written;
      new_bat[last_index] = make_bat_entry(BlockState::kFullyPresent, *fresh);
      if (auto staged = stage_bat_entry(pages, last_index, new_bat[last_index]); !staged)
        return staged;
    }
    // New entries: NOT_PRESENT, or for a fixed disk (LeaveBlockAllocated) fresh zeroed blocks.
    for (uint64_t index = old_entries; index < new_entries; ++index) new_bat[index] = 0;
    if (layout_.leave_block_allocated) {
      for (uint64_t block = old_blocks; block < new_blocks; ++block) {
        auto offset = append_zeroed(block_size);
        if (!offset) return fail(offset.error());
        new_bat[layout_.payload_index(block)] =
            make_bat_entry(BlockState::kFullyPresent, *offset);
      }
    }
    // Crash consistency: blocks and the last block's zeros are stable before any metadata.
    if (auto flushed = file_.flush(); !flushed) return flushed;
    for (uint64_t index = old_entries; index < new_entries; ++index) {
      if (auto staged = stage_bat_entry(pages, index, new_bat[index]); !staged) return staged;
    }
    // Entries beyond the old size are ignored until the size says otherwise: it goes last.
    if (auto staged = stage_size(); !staged) return staged;
  } else {
    // The size goes first; the entries past it are then ignored, and cleared so a later grow
    // cannot expose old blocks.
    if (auto staged = stage_size(); !staged) return staged;
    for (uint64_t index = new_entries; index < old_entries; ++index) {
      if (auto staged = stage_bat_entry(pages, index, 0); !staged) return staged;
    }
  }
  if (auto committed = commit(pages); !committed) return committed;
  std::vector<uint64_t> old_bat = std::move(bat_);
  bat_ = std::move(new_bat);
  layout_.virtual_size = new_size;
  layout_.data_blocks = new_blocks;
  layout_.bat_entries = new_entries;
  bitmaps_.clear();
  // The new size is in place; from here on only space is freed. A block's checked extent is
  // its part below the old end.
  auto used = [&](uint64_t block) { return std::min(block_size, old_size - block * block_size); };
  auto free_block = [&](uint64_t entry, uint64_t start, uint64_t end) -> Result<void> {
    if (bat_state(entry) != BlockState::kFullyPresent || start >= end) return {};
    auto punched = file_.punch_hole(bat_file_offset(entry) + start, end - start);
    if (!punched) return fail(punched.error());
    return {};
  };
  if (new_size > old_size) {
    uint64_t last_index = layout_.payload_index(old_blocks - 1);
    if (bat_[last_index] != old_bat[last_index])
      return free_block(old_bat[last_index], 0, used(old_blocks - 1));
    return {};
  }
  for (uint64_t block = new_blocks; block < old_blocks; ++block) {
    if (auto freed = free_block(old_bat[layout_.payload_index(block)], 0, used(block)); !freed)
      return freed;
  }
  // The new last block's bytes past the new end must read as zeros if the disk grows again.
  uint64_t last_entry = bat_[layout_.payload_index(new_blocks - 1)];
  uint64_t tail = new_size - (new_blocks - 1) * block_size;
  if (bat_state(last_entry) == BlockState::kFullyPresent && tail < used(new_blocks - 1)) {
    return zero_file_range(bat_file_offset(last_entry) + tail, used(new_blocks - 1) - tail,
                           !layout_.leave_block_allocated);
  }
  return {};
}

}  // namespace lamina::storage::vhdx
