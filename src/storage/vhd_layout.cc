#include "storage/vhd_layout.h"

#include <algorithm>
#include <fmt/format.h>

namespace lamina::storage::vhd {

namespace {

struct Range {
  uint64_t start;
  uint64_t end;
  int64_t entry;  // BAT index, or -1 for metadata
  std::string what;
};

}  // namespace

Layout analyze_layout(const Footer& footer, const DynamicHeader& header,
                      std::span<const uint32_t> bat, uint64_t footer_offset) {
  Layout layout;
  const uint64_t block_total = bitmap_size(header.block_size) + header.block_size;
  std::vector<Range> ranges;
  ranges.push_back({0, kFooterSize, -1, "the footer copy"});
  ranges.push_back({footer.data_offset, footer.data_offset + kDynamicHeaderSize, -1,
                    "the dynamic header"});
  uint64_t table_end = header.table_offset + bat_bytes(header.max_table_entries);
  ranges.push_back({header.table_offset, table_end, -1, "the BAT"});
  if (header.table_offset + uint64_t{header.max_table_entries} * 4 > footer_offset) {
    layout.problems.push_back({LayoutProblem::Kind::kTable, 0,
                               fmt::format("the BAT ({} entries at offset {}) runs past the end "
                                           "of the file", header.max_table_entries,
                                           header.table_offset)});
  }
  for (size_t i = 0; i < header.parent_locators.size(); ++i) {
    const ParentLocator& locator = header.parent_locators[i];
    if (locator.platform_code == kPlatformNone || locator.data_length == 0) continue;
    uint64_t end = locator.data_offset + (uint64_t{locator.data_length} + 511) / 512 * 512;
    if (locator.data_offset + locator.data_length > footer_offset) {
      layout.problems.push_back({LayoutProblem::Kind::kLocator, 0,
                                 fmt::format("parent locator {} data (offset {}, {} bytes) lies "
                                             "past the end of the file", i, locator.data_offset,
                                             locator.data_length)});
      continue;
    }
    ranges.push_back({locator.data_offset, end, -1, fmt::format("parent locator {} data", i)});
  }
  for (const Range& range : ranges) layout.metadata_end = std::max(layout.metadata_end, range.end);

  for (size_t i = 0; i < bat.size(); ++i) {
    if (bat[i] == kUnusedBatEntry) continue;
    uint64_t start = uint64_t{bat[i]} * 512;
    if (start + block_total > footer_offset) {
      layout.problems.push_back(
          {LayoutProblem::Kind::kEntryPastEnd, static_cast<uint32_t>(i),
           fmt::format("BAT entry {} points at offset {}, but the block ({} bytes with its "
                       "bitmap) would end past the end of the data at {}", i, start, block_total,
                       footer_offset)});
      continue;
    }
    ++layout.allocated_blocks;
    ranges.push_back({start, start + block_total, static_cast<int64_t>(i), ""});
  }

  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.start < b.start; });
  const Range* furthest = nullptr;
  auto describe = [](const Range& range) {
    return range.entry >= 0 ? fmt::format("the block of BAT entry {}", range.entry) : range.what;
  };
  for (const Range& range : ranges) {
    if (furthest != nullptr && range.start < furthest->end) {
      // Report against a BAT entry so repair and messages can name it.
      const Range& culprit = range.entry >= 0 ? range : *furthest;
      const Range& other = range.entry >= 0 ? *furthest : range;
      layout.problems.push_back(
          {culprit.entry >= 0 ? LayoutProblem::Kind::kEntryOverlap : LayoutProblem::Kind::kTable,
           static_cast<uint32_t>(std::max<int64_t>(culprit.entry, 0)),
           fmt::format("{} (offset {}) overlaps {} (offset {})", describe(culprit),
                       culprit.start, describe(other), other.start)});
    }
    if (furthest == nullptr || range.end > furthest->end) furthest = &range;
  }
  layout.data_end = furthest != nullptr ? furthest->end : 0;
  return layout;
}

}  // namespace lamina::storage::vhd
