#pragma once
// The VHDX metadata log (MS-VHDX 2.3): finding and replaying the active log sequence when a
// file is opened with a non-zero LogGuid, and writing log entries for metadata updates.
//
// Decision on read-only opens (spec note <5>): the log is replayed into memory (LogOverlay)
// and the file is left untouched; read-write opens replay into the file and then clear the
// LogGuid with a header update.

#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "storage/host_file.h"
#include "storage/vhdx_format.h"

namespace lamina::storage::vhdx {

// Logs larger than this are refused for replay (Hyper-V and qemu write 1 MB logs).
inline constexpr uint64_t kMaxReplayLogSize = 64 * kMiB;
// File offsets a log may touch; beyond any VHDX (64 TB of payload plus metadata).
inline constexpr uint64_t kMaxLogFileOffset = 1ull << 47;
// How far past the current end of the file a replay may write or extend it.
inline constexpr uint64_t kMaxLogGrowth = 16ull << 30;

// One update in a replay: a 4 KB page of data, or (data empty) a range to zero.
struct LogWrite {
  uint64_t file_offset = 0;
  uint64_t length = 0;
  std::vector<std::byte> data;
};

struct LogReplay {
  std::vector<LogWrite> writes;  // in replay order, tail entry first
  uint64_t flushed_file_offset = 0;
  uint64_t last_file_offset = 0;
  uint64_t head_sequence = 0;
};

// Reads the log the header points at and collects the active sequence's updates. kCorrupt
// (naming the file) when no valid sequence exists or the file was truncated below the head
// entry's FlushedFileOffset.
Result<LogReplay> read_log(const HostFile& file, const Header& header);

// Applies a replay to a writable file: every update in order, then the size raised to at
// least LastFileOffset, then a flush.
Result<void> apply_log(HostFile& file, const LogReplay& replay);

// A replay kept in memory for read-only opens. Immutable after construction.
class LogOverlay {
 public:
  explicit LogOverlay(LogReplay replay) : replay_(std::move(replay)) {}
  // The file size the replay would leave (it may extend the file).
  uint64_t logical_size(uint64_t file_size) const;
  // Patches bytes already read from [offset, offset + data.size()) with the replayed updates.
  void apply(uint64_t offset, std::span<std::byte> data) const;

 private:
  LogReplay replay_;
};

// One 4 KB page of metadata to write through the log.
struct LogPage {
  uint64_t file_offset = 0;         // 4 KB aligned
  std::span<const std::byte> data;  // 4 KB
};

// Writes log entries, each a complete sequence of its own (its tail is itself), because the
// image applies and flushes every entry's updates before writing the next.
// Owned by the open image; one thread at a time.
class LogWriter {
 public:
  LogWriter(uint64_t log_offset, uint32_t log_length, Guid log_guid)
      : log_offset_(log_offset), log_length_(log_length), log_guid_(log_guid) {}

  // Writes one entry holding `pages` (at most 126) and flushes it to stable storage.
  Result<void> write_entry(HostFile& file, std::span<const LogPage> pages,
                           uint64_t flushed_file_offset, uint64_t last_file_offset);

 private:
  uint64_t log_offset_;
  uint32_t log_length_;
  Guid log_guid_;
  uint64_t position_ = 0;
  uint64_t sequence_ = 1;
};

}  // namespace lamina::storage::vhdx
