#include "storage/vhdx_device.h"

#include <algorithm>
#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::storage::vhdx {

namespace {

constexpr size_t kMaxCachedBitmaps = 16;

uint64_t round_up(uint64_t value, uint64_t unit) { return (value + unit - 1) / unit * unit; }

}  // namespace

VhdxDevice::VhdxDevice(CheckedFile file, std::unique_ptr<LogOverlay> overlay, ParsedImage parsed,
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
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}: range {:#x}+{} passes the end of the disk ({} bytes)",
                                                         file_.name(), offset, length, size()));
  }
  if (writing && file_.read_only()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{} is open read-only", file_.name()));
  }
  if (writing && (offset % kSectorSize != 0 || length % kSectorSize != 0)) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("{}: writes must be whole 512-byte sectors", file_.name()));
  }
  return {};
}

Result<void> VhdxDevice::read(uint64_t offset, std::span<std::byte> data) {
  if (auto checked = check_range(offset, data.size(), false); !checked) return checked;
  for (size_t done = 0; done < data.size();) {
    uint64_t position = offset + done;
    uint64_t in_block = position % layout_.block_size;
    size_t piece = static_cast<size_t>(std::min<uint64_t>(layout_.block_size - in_block, data.size() - done));
    if (auto result = read_piece(position / layout_.block_size, in_block, data.subspan(done, piece)); !result) return result;
    done += piece;
  }
  return {};
}

Result<void> VhdxDevice::read_piece(uint64_t block, uint64_t in_block, std::span<std::byte> out) {
  uint64_t entry = bat_[layout_.payload_index(block)];
  switch (bat_state(entry)) {
    case BlockState::kFullyPresent:
      return view().read(bat_file_offset(entry) + in_block, out, "payload block");
    case BlockState::kPartiallyPresent:
      return read_partial(block, in_block, out);
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
    return fail(ErrorCode::kCorrupt, fmt::format("{}: chunk {} has partially present blocks but no sector bitmap",
                                                 file_.name(), chunk));
  }
  if (bitmaps_.size() >= kMaxCachedBitmaps) bitmaps_.clear();
  std::vector<std::byte> bitmap(kSectorBitmapBlockSize);
  if (auto done = view().read(bat_file_offset(entry), bitmap, "sector bitmap"); !done) return fail(done.error());
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
    size_t run = static_cast<size_t>(std::min<uint64_t>(sector_size - position % sector_size, out.size() - done));
    while (done + run < out.size() && present(position + run) == here) {
      run += static_cast<size_t>(std::min<uint64_t>(sector_size, out.size() - done - run));
    }
    std::span<std::byte> piece = out.subspan(done, run);
    Result<void> result = here ? view().read(block_file_offset + (position - block * layout_.block_size), piece, "payload block")
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
  if (layout_.has_parent) {
    return fail(ErrorCode::kUnsupported, fmt::format("{}: writing differencing VHDX disks is not supported", file_.name()));
  }
  const Header& current = layout_.header;
  if (current.log_length < 2 * kLogSectorSize || current.log_length % kMiB != 0 || current.log_offset % kMiB != 0 ||
      current.log_offset < kHeaderSectionSize || !file_.contains(current.log_offset, current.log_length)) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: the header's log area ({:#x}, {} bytes) is unusable for writes",
                                                 file_.name(), current.log_offset, current.log_length));
  }
  // Section 2.2.2: FileWriteGuid and DataWriteGuid change before the first modification, and
  // a fresh LogGuid makes any stale entries in the log invalid.
  Header header = current;
  header.file_write_guid = random_guid();
  header.data_write_guid = random_guid();
  header.log_guid = random_guid();
  if (auto done = write_headers(header); !done) return done;
  log_writer_.emplace(header.log_offset, header.log_length, header.log_guid);
  return {};
}

Result<void> VhdxDevice::update_bat_entry(uint64_t index) {
  uint64_t page_start = (index * 8) / kLogSectorSize * kLogSectorSize;
  std::vector<std::byte> page(kLogSectorSize);
  if (auto done = file_.read_at(layout_.bat_offset + page_start, page, "BAT page"); !done) return done;
  store_le<uint64_t>(&page[index * 8 - page_start], bat_[index]);
  // Section 2.3: metadata goes to the log first, then to its place, each step flushed.
  LogPage log_page{layout_.bat_offset + page_start, page};
  uint64_t flushed = file_.size() / kMiB * kMiB;
  if (auto done = log_writer_->write_entry(file_, std::span(&log_page, 1), flushed, round_up(file_.size(), kMiB)); !done) {
    return done;
  }
  if (auto done = file_.write_at(layout_.bat_offset + page_start, page); !done) return done;
  return file_.flush();
}

Result<void> VhdxDevice::allocate_block(uint64_t block, uint64_t in_block, std::span<const std::byte> data) {
  // New blocks go at the end of the file, MB-aligned (2.5.1). Extending the file gives zeros,
  // so only the written piece needs writing.
  uint64_t block_offset = round_up(file_.size(), kMiB);
  if (auto done = file_.truncate(block_offset + layout_.block_size); !done) return done;
  if (auto done = file_.write_at(block_offset + in_block, data); !done) return done;
  // Crash consistency: the data is stable before any metadata points at it.
  if (auto done = file_.flush(); !done) return done;
  uint64_t index = layout_.payload_index(block);
  bat_[index] = make_bat_entry(BlockState::kFullyPresent, block_offset);
  return update_bat_entry(index);
}

Result<void> VhdxDevice::write(uint64_t offset, std::span<const std::byte> data) {
  if (auto checked = check_range(offset, data.size(), true); !checked) return checked;
  if (data.empty()) return {};
  if (auto started = begin_session(); !started) return started;
  for (size_t done = 0; done < data.size();) {
    uint64_t position = offset + done;
    uint64_t block = position / layout_.block_size;
    uint64_t in_block = position % layout_.block_size;
    size_t piece = static_cast<size_t>(std::min<uint64_t>(layout_.block_size - in_block, data.size() - done));
    uint64_t entry = bat_[layout_.payload_index(block)];
    Result<void> result = bat_state(entry) == BlockState::kFullyPresent
                              ? file_.write_at(bat_file_offset(entry) + in_block, data.subspan(done, piece))
                              : allocate_block(block, in_block, data.subspan(done, piece));
    if (!result) return result;
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
      if (auto punched = file_.punch_hole(bat_file_offset(entry) + in_block, piece); !punched) return fail(punched.error());
    }
    done += piece;
  }
  return {};
}

}  // namespace lamina::storage::vhdx
