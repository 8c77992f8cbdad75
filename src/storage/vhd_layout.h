#pragma once
// Where things lie in a dynamic or differencing VHD file, and what is wrong with it: BAT
// entries past the end of the file, blocks overlapping each other or the metadata (footer copy,
// dynamic header, BAT, parent locator data). Shared by VhdImage::open (which refuses a bad
// layout) and the checker (which reports every problem and repairs the safe ones).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "storage/host_file.h"
#include "storage/vhd_format.h"

namespace lamina::storage::vhd {

struct LayoutProblem {
  enum class Kind { kTable, kEntryPastEnd, kEntryOverlap, kLocator };
  Kind kind;
  uint32_t entry;  // BAT index for kEntry*, else 0
  std::string message;
};

// Problems kept with their messages; the rest are only counted (a crafted BAT can have millions).
inline constexpr size_t kMaxLayoutProblems = 64;

struct Layout {
  uint64_t metadata_end = 0;    // first byte after the header, BAT and locator data
  uint64_t data_end = 0;        // first byte after the last metadata or block
  uint64_t allocated_blocks = 0;
  std::vector<LayoutProblem> problems;  // the first kMaxLayoutProblems
  uint64_t problem_count = 0;           // all of them
  std::vector<uint32_t> entries_past_end;  // every BAT entry whose block passes the end
};

// footer_offset: where the trailing footer starts (file size - 512); blocks must end before it.
// Memory: 4 bytes per allocated BAT entry (the sorted block starts), whatever the entries say.
Layout analyze_layout(const Footer& footer, const DynamicHeader& header,
                      std::span<const uint32_t> bat, uint64_t footer_offset);

// Reads the BAT (max_table_entries big-endian entries at table_offset, which the caller has
// checked lie inside the file) straight into its vector, in pieces: 4 bytes of memory per entry
// and nothing more, since the file already holds those bytes (a hole reads as zeros).
Result<std::vector<uint32_t>> read_bat(const HostFile& file, const DynamicHeader& header);

// Size of the BAT on disk, padded to whole sectors.
inline uint64_t bat_bytes(uint32_t entries) { return (uint64_t{entries} * 4 + 511) / 512 * 512; }

}  // namespace lamina::storage::vhd
