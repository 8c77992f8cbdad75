#include "storage/vhdx_device.h"

#include <fmt/format.h>
#include <algorithm>

#include "base/byte_order.h"

namespace lamina::storage::vhdx {

namespace {

constexpr size_t kMaxCachedBitmaps = 16;

uint64_t round_up(uint64_t value, uint64_t unit) { return (value + unit - 1) / unit * unit; }

}  // namespace

VhdxDevice::VhdxDevice(HostFile file, std::unique_ptr<LogOverlay> overlay, ParsedImage parsed,
                       std::unique_ptr<BlockDevice> parent)
    : file_(std::move(file)),
      overlay_(std::move(overlay)),
      layout_(std::move(parsed.layout)),
      bat_(std::move(parsed.bat)),
      parent_(std::move(parent)) {}

VhdxDevice::~VhdxDevice() {
  if (!log_writer_) return;
  // Best effort: if this fails the next open replays entries whose updates are already in
  // place, which is harmless.
  Header header = layout_.header;
  header.log_guid = Guid{};
  if (file_.flush()) (void)write_headers(header);
}

uint64_t VhdxDevice::allocated_bytes() const {
  uint64_t blocks = 0;
  for (uint64_t block = 0; block < layout_.data_blocks; ++block) {
    BlockState state = bat_state(bat_[layout_.payload_index(block)]);
    blocks += state == BlockState::kFullyPresent || state == BlockState::kPartiallyPresent;
  }
  return blocks * layout_.block_size;
}

Result<void> VhdxDevice::clear_log_guid() {
  Header header = layout_.header;
  header.log_guid = Guid{};
  return write_headers(header);
}

Result<void> VhdxDevice::check_range(uint64_t offset, uint64_t length, bool writing) const {
  if (offset > size() || length > size() - offset) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: range {:#x}+{} passes the end of the disk ({} bytes)",
                            file_.name(), offset, length, size()));
  }
  if (writing && file_.read_only()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", file_.name()));
  }
  if (writing && (offset % kSectorSize != 0 || length % kSectorSize != 0)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: writes must be whole 512-byte sectors", file_.name()));
  }
  return {};
}

Result<void> VhdxDevice::read(uint64_t offset, std::span<std::byte> data) {
  const std::span<std::byte> whole[] = {data};
  return read_scattered(offset, whole);
}

Result<void> VhdxDevice::read_scattered(uint64_t offset, ScatterList buffers) {
  const uint64_t length = total_bytes(buffers);
  if (auto checked = check_range(offset, length, false); !checked) return checked;
  ScatterCursor cursor(buffers);
  for (uint64_t left = length; left > 0;) {
    const uint64_t block = offset / layout_.block_size;
    const uint64_t in_block = offset % layout_.block_size;
    const uint64_t piece = std::min(left, layout_.block_size - in_block);
    cursor.take(piece, scattered_pieces_);
    const uint64_t entry = bat_[layout_.payload_index(block)];
    if (bat_state(entry) == BlockState::kFullyPresent && !overlay_) {
      // The block's payload is one stretch of the file.
      if (auto done = file_.read_vectored_at(bat_file_offset(entry) + in_block, scattered_pieces_, "payload block");
          !done)
        return done;
    } else {
      uint64_t at = in_block;
      for (const std::span<std::byte>& part : scattered_pieces_) {
        if (auto done = read_piece(block, at, part); !done) return done;
        at += part.size();
      }
    }
    offset += piece;
    left -= piece;
  }
  return {};
}

Result<void> VhdxDevice::read_piece(uint64_t block, uint64_t in_block, std::span<std::byte> out) {
  uint64_t entry = bat_[layout_.payload_index(block)];
  switch (bat_state(entry)) {
    case BlockState::kFullyPresent:
      return view().read(bat_file_offset(entry) + in_block, out, "payload block");
    case BlockState::kPartiallyPresent: return read_partial(block, in_block, out);
    case BlockState::kNotPresent:
      if (parent_) return read_parent(block * layout_.block_size + in_block, out);
      [[fallthrough]];
    default:
      // ZERO, UNMAPPED and UNDEFINED read as zeros (2.5.1.1 allows zeros for each).
      std::ranges::fill(out, std::byte{0});
      return {};
  }
}

Result<void> VhdxDevice::read_parent(uint64_t offset, std::span<std::byte> out) {
  std::ranges::fill(out, std::byte{0});
  if (offset >= parent_->size()) return {};
  return parent_->read(offset, out.first(std::min<uint64_t>(out.size(), parent_->size() - offset)));
}

Result<const std::vector<std::byte>*> VhdxDevice::sector_bitmap(uint64_t chunk) {
  if (auto found = bitmaps_.find(chunk); found != bitmaps_.end()) return &found->second;
  uint64_t entry = bat_[layout_.bitmap_index(chunk)];
  if (bat_state(entry) != BlockState::kFullyPresent) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: chunk {} has partially present blocks but no sector bitmap",
                            file_.name(), chunk));
  }
  if (bitmaps_.size() >= kMaxCachedBitmaps) bitmaps_.clear();
  std::vector<std::byte> bitmap(kSectorBitmapBlockSize);
  if (auto done = view().read(bat_file_offset(entry), bitmap, "sector bitmap"); !done)
    return fail(done.error());
  return &bitmaps_.emplace(chunk, std::move(bitmap)).first->second;
}

Result<void> VhdxDevice::read_partial(uint64_t block, uint64_t in_block, std::span<std::byte> out) {
  // Section 2.4: one bit per logical sector of the chunk; 1 means "in this file".
  uint64_t sector_size = layout_.logical_sector_size;
  uint64_t chunk_bytes = (1ull << 23) * sector_size;
  uint64_t virtual_offset = block * layout_.block_size + in_block;
  auto bitmap = sector_bitmap(virtual_offset / chunk_bytes);
  if (!bitmap) return fail(bitmap.error());
  uint64_t block_file_offset = bat_file_offset(bat_[layout_.payload_index(block)]);
  auto present = [&](uint64_t position) {
    uint64_t bit = (position % chunk_bytes) / sector_size;
    return (static_cast<unsigned>((**bitmap)[bit / 8]) >> (bit % 8)) & 1u;
  };
  for (size_t done = 0; done < out.size();) {
    uint64_t position = virtual_offset + done;
    unsigned here = present(position);
    // Extend the run while the following sectors have the same bit.
    size_t run = static_cast<size_t>(
        std::min<uint64_t>(sector_size - position % sector_size, out.size() - done));
    while (done + run < out.size() && present(position + run) == here) {
      run += static_cast<size_t>(std::min<uint64_t>(sector_size, out.size() - done - run));
    }
    std::span<std::byte> piece = out.subspan(done, run);
    Result<void> result =
        here ? view().read(block_file_offset + (position - block * layout_.block_size), piece,
                           "payload block")
             : (parent_ ? read_parent(position, piece) : Result<void>{});
    if (!parent_ && !here) std::ranges::fill(piece, std::byte{0});
    if (!result) return result;
    done += run;
  }
  return {};
}

Result<void> VhdxDevice::write_headers(Header header) {
  // Section 2.2.2.1: write the non-current copy with the next sequence number and flush; doing
  // it twice leaves both copies current, so one torn write never loses the header.
  for (int round = 0; round < 2; ++round) {
    int slot = 1 - layout_.header_slot;
    header.sequence_number = layout_.header.sequence_number + 1;
    auto bytes = encode_header(header);
    if (auto done = file_.write_at(kHeaderOffsets[slot], bytes); !done) return done;
    if (auto done = file_.flush(); !done) return done;
    layout_.header = header;
    layout_.header_slot = slot;
  }
  return {};
}

Result<void> VhdxDevice::begin_session() {
  if (log_writer_) return {};
  const Header& current = layout_.header;
  if (current.log_length < 2 * kLogSectorSize || current.log_length % kMiB != 0 ||
      current.log_offset % kMiB != 0 || current.log_offset < kHeaderSectionSize ||
      !file_.contains(current.log_offset, current.log_length)) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: the header's log area ({:#x}, {} bytes) is unusable for writes",
                            file_.name(), current.log_offset, current.log_length));
  }
  // Section 2.2.2: FileWriteGuid and DataWriteGuid change before the first modification, and
  // a fresh LogGuid makes any stale entries in the log invalid.
  Header header = current;
  header.file_write_guid = random_guid();
  header.data_write_guid = session_data_write_guid_.value_or(random_guid());
  header.log_guid = random_guid();
  if (auto done = write_headers(header); !done) return done;
  log_writer_.emplace(header.log_offset, header.log_length, header.log_guid);
  return {};
}

Result<std::byte*> VhdxDevice::pending_page(std::vector<PendingPage>& pages, uint64_t file_offset) {
  uint64_t page_offset = file_offset / kLogSectorSize * kLogSectorSize;
  for (PendingPage& page : pages) {
    if (page.file_offset == page_offset) return page.data.data() + (file_offset - page_offset);
  }
  PendingPage page{page_offset, std::vector<std::byte>(kLogSectorSize)};
  if (auto done = file_.read_at(page_offset, page.data, "metadata page"); !done)
    return fail(done.error());
  pages.push_back(std::move(page));
  return pages.back().data.data() + (file_offset - page_offset);
}

Result<void> VhdxDevice::stage_bat_entry(std::vector<PendingPage>& pages, uint64_t index,
                                         uint64_t entry) {
  auto target = pending_page(pages, layout_.bat_offset + index * 8);
  if (!target) return fail(target.error());
  store_le<uint64_t>(*target, entry);
  return {};
}

Result<void> VhdxDevice::commit(std::vector<PendingPage>& pages) {
  // Section 2.3: metadata goes to the log first, then to its place, each step flushed. One
  // entry holds at most 126 pages; larger updates become several self-contained entries.
  for (size_t first = 0; first < pages.size(); first += 126) {
    size_t count = std::min<size_t>(126, pages.size() - first);
    std::vector<LogPage> log_pages;
    for (size_t index = first; index < first + count; ++index)
      log_pages.push_back({pages[index].file_offset, pages[index].data});
    uint64_t flushed = file_.size() / kMiB * kMiB;
    if (auto done =
            log_writer_->write_entry(file_, log_pages, flushed, round_up(file_.size(), kMiB));
        !done)
      return done;
    for (size_t index = first; index < first + count; ++index) {
      if (auto done = file_.write_at(pages[index].file_offset, pages[index].data); !done)
        return done;
    }
    if (auto done = file_.flush(); !done) return done;
  }
  return {};
}

Result<uint64_t> VhdxDevice::append_zeroed(uint64_t length) {
  // New blocks go at the end of the file, MB-aligned (2.5.1); extending the file gives zeros.
  uint64_t offset = round_up(file_.size(), kMiB);
  if (auto done = file_.truncate(offset + length); !done) return fail(done.error());
  return offset;
}

Result<void> VhdxDevice::stage_present_sectors(std::vector<PendingPage>& pages,
                                               uint64_t virtual_offset, uint64_t length) {
  // Section 2.4: one bit per logical sector of the chunk, bit 0 of byte 0 first.
  uint64_t sector_size = layout_.logical_sector_size;
  uint64_t chunk_bytes = (1ull << 23) * sector_size;
  uint64_t chunk = virtual_offset / chunk_bytes;
  uint64_t bitmap_index = layout_.bitmap_index(chunk);
  uint64_t bitmap_entry = bat_[bitmap_index];
  if (bat_state(bitmap_entry) != BlockState::kFullyPresent) {
    auto offset = append_zeroed(kSectorBitmapBlockSize);
    if (!offset) return fail(offset.error());
    bitmap_entry = make_bat_entry(BlockState::kFullyPresent, *offset);
    if (auto staged = stage_bat_entry(pages, bitmap_index, bitmap_entry); !staged) return staged;
    staged_entries_.emplace_back(bitmap_index, bitmap_entry);
  }
  uint64_t first_bit = (virtual_offset % chunk_bytes) / sector_size;
  uint64_t end_bit = first_bit + (length + sector_size - 1) / sector_size;
  for (uint64_t bit = first_bit; bit < end_bit; ++bit) {
    auto target = pending_page(pages, bat_file_offset(bitmap_entry) + bit / 8);
    if (!target) return fail(target.error());
    **target |= static_cast<std::byte>(1u << (bit % 8));
  }
  bitmaps_.erase(chunk);
  return {};
}

Result<void> VhdxDevice::write_piece(uint64_t block, uint64_t in_block,
                                     std::span<const std::byte> data) {
  uint64_t index = layout_.payload_index(block);
  uint64_t entry = bat_[index];
  BlockState state = bat_state(entry);
  uint64_t virtual_offset = block * layout_.block_size + in_block;
  std::vector<PendingPage> pages;
  staged_entries_.clear();
  if (state == BlockState::kFullyPresent || state == BlockState::kPartiallyPresent) {
    if (auto done = file_.write_at(bat_file_offset(entry) + in_block, data); !done) return done;
    if (state == BlockState::kFullyPresent) return {};
    if (auto done = file_.flush(); !done) return done;
  } else {
    auto offset = append_zeroed(layout_.block_size);
    if (!offset) return fail(offset.error());
    if (auto done = file_.write_at(*offset + in_block, data); !done) return done;
    // Crash consistency: the data is stable before any metadata points at it.
    if (auto done = file_.flush(); !done) return done;
    // A differencing disk keeps the parent's view of the sectors not written (NOT_PRESENT);
    // a block that read as zeros (ZERO, UNMAPPED, UNDEFINED) stays zeros around the write.
    bool partial = layout_.has_parent && state == BlockState::kNotPresent;
    entry = make_bat_entry(partial ? BlockState::kPartiallyPresent : BlockState::kFullyPresent,
                           *offset);
    if (auto staged = stage_bat_entry(pages, index, entry); !staged) return staged;
    staged_entries_.emplace_back(index, entry);
    if (!partial) {
      if (auto done = commit(pages); !done) return done;
      bat_[index] = entry;
      return {};
    }
  }
  if (auto staged = stage_present_sectors(pages, virtual_offset, data.size()); !staged)
    return staged;
  if (auto done = commit(pages); !done) return done;
  for (const auto& [staged_index, staged_entry] : staged_entries_)
    bat_[staged_index] = staged_entry;
  return {};
}

Result<void> VhdxDevice::write(uint64_t offset, std::span<const std::byte> data) {
  if (auto checked = check_range(offset, data.size(), true); !checked) return checked;
  if (layout_.has_parent && (offset % layout_.logical_sector_size != 0 ||
                             data.size() % layout_.logical_sector_size != 0)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: writes to a differencing disk must be whole {}-byte sectors",
                            file_.name(), layout_.logical_sector_size));
  }
  if (data.empty()) return {};
  if (auto started = begin_session(); !started) return started;
  for (size_t done = 0; done < data.size();) {
    uint64_t position = offset + done;
    uint64_t in_block = position % layout_.block_size;
    size_t piece =
        static_cast<size_t>(std::min<uint64_t>(layout_.block_size - in_block, data.size() - done));
    if (auto result =
            write_piece(position / layout_.block_size, in_block, data.subspan(done, piece));
        !result)
      return result;
    done += piece;
  }
  return {};
}

Result<void> VhdxDevice::discard(uint64_t offset, uint64_t length) {
  if (auto checked = check_range(offset, length, true); !checked) return checked;
  if (length == 0) return {};
  if (auto started = begin_session(); !started) return started;
  // Punching holes in present blocks frees host space and reads back as zeros without any
  // metadata change; blocks that are not present already read as zeros.
  for (uint64_t done = 0; done < length;) {
    uint64_t position = offset + done;
    uint64_t in_block = position % layout_.block_size;
    uint64_t piece = std::min<uint64_t>(layout_.block_size - in_block, length - done);
    uint64_t entry = bat_[layout_.payload_index(position / layout_.block_size)];
    if (bat_state(entry) == BlockState::kFullyPresent) {
      if (auto punched = file_.punch_hole(bat_file_offset(entry) + in_block, piece); !punched)
        return fail(punched.error());
    }
    done += piece;
  }
  return {};
}

Result<void> VhdxDevice::zero_file_range(uint64_t file_offset, uint64_t length, bool free_space) {
  auto done = free_space ? file_.punch_hole(file_offset, length)
                         : file_.zero_range(file_offset, length);
  if (!done) return fail(done.error());
  if (*done) return {};
  std::vector<std::byte> zeros(static_cast<size_t>(std::min<uint64_t>(length, kMiB)));
  for (uint64_t written = 0; written < length;) {
    auto piece = std::span<const std::byte>(zeros).first(
        static_cast<size_t>(std::min<uint64_t>(length - written, zeros.size())));
    if (auto wrote = file_.write_at(file_offset + written, piece); !wrote) return wrote;
    written += piece.size();
  }
  return {};
}

Result<void> VhdxDevice::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (auto checked = check_range(offset, length, true); !checked) return checked;
  if (length == 0) return {};
  if (layout_.has_parent) return BlockDevice::write_zeroes(offset, length, may_unmap);
  if (auto started = begin_session(); !started) return started;
  std::vector<PendingPage> pages;
  struct Zeroed {
    uint64_t index, old_entry, length;  // BAT index, the entry it had, the block's bytes
  };
  std::vector<Zeroed> zeroed;
  for (uint64_t done = 0; done < length;) {
    uint64_t position = offset + done;
    uint64_t block = position / layout_.block_size;
    uint64_t in_block = position % layout_.block_size;
    uint64_t piece = std::min<uint64_t>(layout_.block_size - in_block, length - done);
    uint64_t block_end = std::min(size(), (block + 1) * layout_.block_size);
    uint64_t index = layout_.payload_index(block);
    uint64_t entry = bat_[index];
    done += piece;
    // Without a parent every other state reads as zeros already (2.5.1.1).
    if (bat_state(entry) != BlockState::kFullyPresent) continue;
    if (may_unmap && !layout_.leave_block_allocated && in_block == 0 &&
        position + piece == block_end) {
      // 2.5.1.1: PAYLOAD_BLOCK_ZERO, "the contents of the block are defined to be zeros".
      if (auto staged = stage_bat_entry(pages, index, make_bat_entry(BlockState::kZero, 0));
          !staged)
        return staged;
      zeroed.push_back({index, entry, block_end - position});
      continue;
    }
    bool free_space = may_unmap && !layout_.leave_block_allocated;
    if (auto zero = zero_file_range(bat_file_offset(entry) + in_block, piece, free_space); !zero)
      return zero;
  }
  if (zeroed.empty()) return {};
  if (auto committed = commit(pages); !committed) return committed;
  for (const Zeroed& block : zeroed) {
    bat_[block.index] = make_bat_entry(BlockState::kZero, 0);
    // The block's old space is unreferenced now; compact reclaims it, the hole frees it today.
    if (auto punched = file_.punch_hole(bat_file_offset(block.old_entry), block.length); !punched)
      return fail(punched.error());
  }
  return {};
}

}  // namespace lamina::storage::vhdx
