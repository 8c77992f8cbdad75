#pragma once
// Where things lie in a dynamic or differencing VHD file, and what is wrong with it: BAT
// entries past the end of the file, blocks overlapping each other or the metadata (footer copy,
// dynamic header, BAT, parent locator data). Shared by VhdImage::open (which refuses a bad
// layout) and the checker (which reports every problem and repairs the safe ones).

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "storage/vhd_format.h"

namespace lamina::storage::vhd {

struct LayoutProblem {
  enum class Kind { kTable, kEntryPastEnd, kEntryOverlap, kLocator };
  Kind kind;
  uint32_t entry;  // BAT index for kEntry*, else 0
  std::string message;
};

struct Layout {
  uint64_t metadata_end = 0;    // first byte after the header, BAT and locator data
  uint64_t data_end = 0;        // first byte after the last metadata or block
  uint64_t allocated_blocks = 0;
  std::vector<LayoutProblem> problems;
};

// footer_offset: where the trailing footer starts (file size - 512); blocks must end before it.
Layout analyze_layout(const Footer& footer, const DynamicHeader& header,
                      std::span<const uint32_t> bat, uint64_t footer_offset);

// Size of the BAT on disk, padded to whole sectors.
inline uint64_t bat_bytes(uint32_t entries) { return (uint64_t{entries} * 4 + 511) / 512 * 512; }

}  // namespace lamina::storage::vhd
