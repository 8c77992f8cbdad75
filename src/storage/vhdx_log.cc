#include "storage/vhdx_log.h"

#include <fmt/format.h>
#include <algorithm>
#include <cstring>
#include <optional>

#include "base/byte_order.h"
#include "storage/crc32c.h"

namespace lamina::storage::vhdx {

namespace {

constexpr uint32_t kEntrySignature = 0x65676f6c;           // "loge"
constexpr uint32_t kZeroSignature = 0x6f72657a;            // "zero"
constexpr uint32_t kDataDescriptorSignature = 0x63736564;  // "desc"
constexpr uint32_t kDataSectorSignature = 0x61746164;      // "data"
constexpr size_t kEntryHeaderSize = 64;
constexpr size_t kDescriptorSize = 32;
constexpr size_t kMaxDescriptorsInFirstSector = 126;

struct Entry {
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t tail = 0;
  uint64_t sequence = 0;
  uint64_t flushed_file_offset = 0;
  uint64_t last_file_offset = 0;
  std::vector<LogWrite> writes;
};

// The log region in memory, read with wrap-around (entries may wrap, section 2.3).
class LogBuffer {
 public:
  explicit LogBuffer(std::vector<std::byte> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const { return bytes_.size(); }
  // Copies `length` bytes starting at `offset`, wrapping at the end.
  std::vector<std::byte> copy(uint64_t offset, uint64_t length) const {
    std::vector<std::byte> out(length);
    for (uint64_t done = 0; done < length;) {
      uint64_t at = (offset + done) % bytes_.size();
      uint64_t piece = std::min(length - done, bytes_.size() - at);
      std::memcpy(out.data() + done, bytes_.data() + at, piece);
      done += piece;
    }
    return out;
  }

 private:
  std::vector<std::byte> bytes_;
};

// Decodes and fully validates the entry at `offset` (section 2.3.1); nullopt when invalid.
std::optional<Entry> parse_entry(const LogBuffer& log, uint64_t offset, const Guid& log_guid) {
  std::vector<std::byte> first = log.copy(offset, kLogSectorSize);
  if (load_le<uint32_t>(&first[0]) != kEntrySignature) return std::nullopt;
  Entry entry;
  entry.offset = offset;
  entry.length = load_le<uint32_t>(&first[8]);
  entry.tail = load_le<uint32_t>(&first[12]);
  entry.sequence = load_le<uint64_t>(&first[16]);
  uint32_t descriptor_count = load_le<uint32_t>(&first[24]);
  if (load_guid(&first[32]) != log_guid) return std::nullopt;
  entry.flushed_file_offset = load_le<uint64_t>(&first[48]);
  entry.last_file_offset = load_le<uint64_t>(&first[56]);
  if (entry.length < kLogSectorSize || entry.length % kLogSectorSize != 0 ||
      entry.length > log.size())
    return std::nullopt;
  if (entry.tail % kLogSectorSize != 0 || entry.tail >= log.size() || entry.sequence == 0)
    return std::nullopt;
  if (entry.last_file_offset > kMaxLogFileOffset || entry.flushed_file_offset > kMaxLogFileOffset)
    return std::nullopt;
  uint64_t descriptor_bytes = kEntryHeaderSize + uint64_t{descriptor_count} * kDescriptorSize;
  uint64_t descriptor_sectors = (descriptor_bytes + kLogSectorSize - 1) / kLogSectorSize;
  if (descriptor_sectors * kLogSectorSize > entry.length) return std::nullopt;

  std::vector<std::byte> bytes = log.copy(offset, entry.length);
  std::array<std::byte, 4> zero{};
  uint32_t crc = crc32c(std::span(bytes).first(4));
  crc = crc32c(zero, crc);
  crc = crc32c(std::span(bytes).subspan(8), crc);
  if (crc != load_le<uint32_t>(&bytes[4])) return std::nullopt;

  uint64_t data_sector = descriptor_sectors;
  for (uint32_t index = 0; index < descriptor_count; ++index) {
    const std::byte* descriptor = &bytes[kEntryHeaderSize + kDescriptorSize * index];
    uint32_t signature = load_le<uint32_t>(descriptor);
    uint64_t file_offset = load_le<uint64_t>(descriptor + 16);
    if (load_le<uint64_t>(descriptor + 24) != entry.sequence) return std::nullopt;
    // Updates never touch the header section (2.3: the log is not used for the headers).
    if (file_offset % kLogSectorSize != 0 || file_offset < kHeaderSectionSize ||
        file_offset > kMaxLogFileOffset) {
      return std::nullopt;
    }
    LogWrite write;
    write.file_offset = file_offset;
    if (signature == kZeroSignature) {
      write.length = load_le<uint64_t>(descriptor + 8);
      if (write.length % kLogSectorSize != 0 || write.length > kMaxLogFileOffset - file_offset)
        return std::nullopt;
    } else if (signature == kDataDescriptorSignature) {
      if ((data_sector + 1) * kLogSectorSize > entry.length) return std::nullopt;
      const std::byte* sector = &bytes[data_sector * kLogSectorSize];
      uint64_t sequence =
          (uint64_t{load_le<uint32_t>(sector + 4)} << 32) | load_le<uint32_t>(sector + 4092);
      if (load_le<uint32_t>(sector) != kDataSectorSignature || sequence != entry.sequence)
        return std::nullopt;
      // 2.3.1.4: bytes 0-7 live in the descriptor's LeadingBytes, 4092-4095 in TrailingBytes.
      write.length = kLogSectorSize;
      write.data.resize(kLogSectorSize);
      std::memcpy(&write.data[0], descriptor + 8, 8);
      std::memcpy(&write.data[8], sector + 8, 4084);
      std::memcpy(&write.data[4092], descriptor + 4, 4);
      ++data_sector;
    } else {
      return std::nullopt;
    }
    entry.writes.push_back(std::move(write));
  }
  return entry;
}

}  // namespace

Result<LogReplay> read_log(const HostFile& file, const Header& header) {
  auto corrupt = [&](std::string_view what) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: {}", file.name(), what));
  };
  if (header.log_length == 0 || header.log_length % kMiB != 0 || header.log_offset % kMiB != 0 ||
      header.log_offset < kHeaderSectionSize ||
      !file.contains(header.log_offset, header.log_length)) {
    return corrupt(fmt::format("log at {:#x} ({} bytes) is misaligned or outside the file",
                               header.log_offset, header.log_length));
  }
  if (header.log_length > kMaxReplayLogSize) {
    return fail(
        ErrorCode::kUnsupported,
        fmt::format("{}: the log needs replay but is {} bytes (Lamina replays up to 64 MiB)",
                    file.name(), header.log_length));
  }
  std::vector<std::byte> bytes(header.log_length);
  if (auto done = file.read_at(header.log_offset, bytes, "log"); !done) return fail(done.error());
  LogBuffer log(std::move(bytes));

  // Section 2.3.3's scan for the active sequence: the newest valid and complete one.
  std::vector<Entry> candidate;
  uint64_t current_tail = 0;
  uint64_t old_tail = 0;
  for (uint64_t iteration = 0; iteration <= log.size() / kLogSectorSize; ++iteration) {
    std::vector<Entry> sequence;
    uint64_t head = current_tail;
    uint64_t covered = 0;
    while (covered < log.size()) {
      auto entry = parse_entry(log, head, header.log_guid);
      if (!entry || (!sequence.empty() && entry->sequence != sequence.back().sequence + 1)) break;
      if (covered + entry->length > log.size()) break;
      covered += entry->length;
      head = (head + entry->length) % log.size();
      sequence.push_back(std::move(*entry));
    }
    bool valid = false;
    if (!sequence.empty()) {
      uint32_t tail = sequence.back().tail;
      auto first = std::ranges::find(sequence, uint64_t{tail}, &Entry::offset);
      if (first != sequence.end()) {
        valid = true;
        if (candidate.empty() || sequence.back().sequence > candidate.back().sequence) {
          candidate.assign(std::make_move_iterator(first), std::make_move_iterator(sequence.end()));
        }
      }
    }
    current_tail = valid ? head : (current_tail + kLogSectorSize) % log.size();
    if (current_tail <= old_tail) break;
    old_tail = current_tail;
  }
  // No entry carries this LogGuid: the writer stopped after starting its session (headers with
  // a fresh LogGuid) and before its first entry was flushed. Metadata only reaches its place
  // after its entry is flushed, so nothing of that session is in place: the log is empty and
  // there is nothing to replay (qemu's reader concludes the same).
  if (candidate.empty()) return LogReplay{};
  LogReplay replay;
  replay.flushed_file_offset = candidate.back().flushed_file_offset;
  replay.last_file_offset = candidate.back().last_file_offset;
  replay.head_sequence = candidate.back().sequence;
  if (file.size() < replay.flushed_file_offset) {
    return corrupt(fmt::format(
        "file is {} bytes but the log says it was flushed at {} bytes: it was truncated",
        file.size(), replay.flushed_file_offset));
  }
  // A log grows the file by a few blocks at most; anything far past the end is not a real log
  // and must not make Lamina create a huge file.
  uint64_t limit = std::max(file.size(), replay.flushed_file_offset) + kMaxLogGrowth;
  if (replay.last_file_offset > limit) {
    return corrupt(fmt::format("the log's LastFileOffset {:#x} is far beyond the end of the file",
                               replay.last_file_offset));
  }
  for (Entry& entry : candidate) {
    for (LogWrite& write : entry.writes) {
      if (write.file_offset + write.length > limit) {
        return corrupt(fmt::format("the log writes at {:#x}, far beyond the end of the file",
                                   write.file_offset));
      }
      replay.writes.push_back(std::move(write));
    }
  }
  return replay;
}

Result<void> apply_log(HostFile& file, const LogReplay& replay) {
  std::vector<std::byte> zeros;
  for (const LogWrite& write : replay.writes) {
    if (!write.data.empty()) {
      if (auto done = file.write_at(write.file_offset, write.data); !done) return done;
      continue;
    }
    // Zeroing past the end of the file is done by extending it.
    uint64_t end = write.file_offset + write.length;
    uint64_t inside_end = std::min(end, file.size());
    if (zeros.empty()) zeros.resize(kMiB);
    for (uint64_t position = write.file_offset; position < inside_end;) {
      uint64_t piece = std::min<uint64_t>(zeros.size(), inside_end - position);
      if (auto done = file.write_at(position, std::span(zeros).first(piece)); !done) return done;
      position += piece;
    }
    if (end > file.size()) {
      if (auto done = file.truncate(end); !done) return done;
    }
  }
  if (file.size() < replay.last_file_offset) {
    if (auto done = file.truncate(replay.last_file_offset); !done) return done;
  }
  return file.flush();
}

uint64_t LogOverlay::logical_size(uint64_t file_size) const {
  uint64_t size = std::max(file_size, replay_.last_file_offset);
  for (const LogWrite& write : replay_.writes)
    size = std::max(size, write.file_offset + write.length);
  return size;
}

void LogOverlay::apply(uint64_t offset, std::span<std::byte> data) const {
  uint64_t end = offset + data.size();
  for (const LogWrite& write : replay_.writes) {
    uint64_t start = std::max(offset, write.file_offset);
    uint64_t stop = std::min(end, write.file_offset + write.length);
    if (start >= stop) continue;
    std::byte* target = data.data() + (start - offset);
    if (write.data.empty()) {
      std::memset(target, 0, stop - start);
    } else {
      std::memcpy(target, write.data.data() + (start - write.file_offset), stop - start);
    }
  }
}

Result<void> LogWriter::write_entry(HostFile& file, std::span<const LogPage> pages,
                                    uint64_t flushed_file_offset, uint64_t last_file_offset) {
  if (pages.empty() || pages.size() > kMaxDescriptorsInFirstSector) {
    return fail(ErrorCode::kInternal, "a log entry holds 1 to 126 pages");
  }
  uint32_t length = static_cast<uint32_t>((1 + pages.size()) * kLogSectorSize);
  if (length > log_length_) return fail(ErrorCode::kInternal, "log is too small for the entry");
  // Entries are written whole; one that would run past the end starts over at the beginning.
  if (position_ + length > log_length_) position_ = 0;
  std::vector<std::byte> entry(length);
  store_le<uint32_t>(&entry[0], kEntrySignature);
  store_le<uint32_t>(&entry[8], length);
  store_le<uint32_t>(&entry[12], static_cast<uint32_t>(position_));  // its own tail
  store_le<uint64_t>(&entry[16], sequence_);
  store_le<uint32_t>(&entry[24], static_cast<uint32_t>(pages.size()));
  store_guid(&entry[32], log_guid_);
  store_le<uint64_t>(&entry[48], flushed_file_offset);
  store_le<uint64_t>(&entry[56], last_file_offset);
  for (size_t index = 0; index < pages.size(); ++index) {
    const LogPage& page = pages[index];
    if (page.data.size() != kLogSectorSize || page.file_offset % kLogSectorSize != 0) {
      return fail(ErrorCode::kInternal, "log pages are 4 KB at 4 KB-aligned offsets");
    }
    std::byte* descriptor = &entry[kEntryHeaderSize + kDescriptorSize * index];
    store_le<uint32_t>(descriptor, kDataDescriptorSignature);
    std::memcpy(descriptor + 4, &page.data[4092], 4);
    std::memcpy(descriptor + 8, &page.data[0], 8);
    store_le<uint64_t>(descriptor + 16, page.file_offset);
    store_le<uint64_t>(descriptor + 24, sequence_);
    std::byte* sector = &entry[(1 + index) * kLogSectorSize];
    store_le<uint32_t>(sector, kDataSectorSignature);
    store_le<uint32_t>(sector + 4, static_cast<uint32_t>(sequence_ >> 32));
    std::memcpy(sector + 8, &page.data[8], 4084);
    store_le<uint32_t>(sector + 4092, static_cast<uint32_t>(sequence_));
  }
  store_le<uint32_t>(&entry[4], crc32c(entry));
  if (auto done = file.write_at(log_offset_ + position_, entry); !done) return done;
  if (auto done = file.flush(); !done) return done;
  position_ += length;
  ++sequence_;
  return {};
}

}  // namespace lamina::storage::vhdx
