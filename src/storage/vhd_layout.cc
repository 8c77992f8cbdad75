#include "storage/vhd_layout.h"

#include <algorithm>
#include <fmt/format.h>
#include <functional>

#include "base/byte_order.h"

namespace lamina::storage::vhd {

namespace {

struct Range {
  uint64_t start;
  uint64_t end;
  std::string what;
};

void add_problem(Layout& layout, LayoutProblem::Kind kind, uint32_t entry,
                 const std::function<std::string()>& message) {
  ++layout.problem_count;
  if (layout.problems.size() < kMaxLayoutProblems) layout.problems.push_back({kind, entry, message()});
}

}  // namespace

Result<std::vector<uint32_t>> read_bat(const HostFile& file, const DynamicHeader& header) {
  std::vector<uint32_t> bat(header.max_table_entries);
  constexpr size_t kPiece = 1 << 16;  // entries per read
  for (size_t first = 0; first < bat.size(); first += kPiece) {
    size_t count = std::min(kPiece, bat.size() - first);
    auto bytes = std::as_writable_bytes(std::span(bat).subspan(first, count));
    if (auto r = file.read_at(header.table_offset + uint64_t{first} * 4, bytes, "BAT"); !r) {
      return fail(r.error());
    }
    for (size_t i = first; i < first + count; ++i) bat[i] = load_be<uint32_t>(&bat[i]);
  }
  return bat;
}

Layout analyze_layout(const Footer& footer, const DynamicHeader& header,
                      std::span<const uint32_t> bat, uint64_t footer_offset) {
  Layout layout;
  const uint64_t block_total = bitmap_size(header.block_size) + header.block_size;
  // The metadata: a handful of ranges, checked against each other and against every block.
  std::vector<Range> metadata;
  metadata.push_back({0, kFooterSize, "the footer copy"});
  metadata.push_back({footer.data_offset, footer.data_offset + kDynamicHeaderSize,
                      "the dynamic header"});
  uint64_t table_end = header.table_offset + bat_bytes(header.max_table_entries);
  metadata.push_back({header.table_offset, table_end, "the BAT"});
  if (header.table_offset + uint64_t{header.max_table_entries} * 4 > footer_offset) {
    add_problem(layout, LayoutProblem::Kind::kTable, 0, [&] {
      return fmt::format("the BAT ({} entries at offset {}) runs past the end of the file",
                         header.max_table_entries, header.table_offset);
    });
  }
  for (size_t i = 0; i < header.parent_locators.size(); ++i) {
    const ParentLocator& locator = header.parent_locators[i];
    if (locator.platform_code == kPlatformNone || locator.data_length == 0) continue;
    uint64_t end = locator.data_offset + (uint64_t{locator.data_length} + 511) / 512 * 512;
    if (locator.data_offset + locator.data_length > footer_offset) {
      add_problem(layout, LayoutProblem::Kind::kLocator, 0, [&] {
        return fmt::format("parent locator {} data (offset {}, {} bytes) lies past the end of "
                           "the file", i, locator.data_offset, locator.data_length);
      });
      continue;
    }
    metadata.push_back({locator.data_offset, end, fmt::format("parent locator {} data", i)});
  }
  std::ranges::sort(metadata, {}, &Range::start);
  for (size_t i = 0; i < metadata.size(); ++i) {
    layout.metadata_end = std::max(layout.metadata_end, metadata[i].end);
    for (size_t j = i + 1; j < metadata.size() && metadata[j].start < metadata[i].end; ++j) {
      add_problem(layout, LayoutProblem::Kind::kTable, 0, [&] {
        return fmt::format("{} (offset {}) overlaps {} (offset {})", metadata[j].what,
                           metadata[j].start, metadata[i].what, metadata[i].start);
      });
    }
  }

  // One pass over the BAT: blocks past the end or over metadata are reported as they come;
  // the others' starts (in sectors) are collected, sorted, and neighbours compared.
  std::vector<uint32_t> starts;
  for (size_t i = 0; i < bat.size(); ++i) {
    if (bat[i] == kUnusedBatEntry) continue;
    uint64_t start = uint64_t{bat[i]} * 512;
    auto entry = static_cast<uint32_t>(i);
    if (start + block_total > footer_offset) {
      layout.entries_past_end.push_back(entry);
      add_problem(layout, LayoutProblem::Kind::kEntryPastEnd, entry, [&] {
        return fmt::format("BAT entry {} points at offset {}, but the block ({} bytes with its "
                           "bitmap) would end past the end of the data at {}",
                           i, start, block_total, footer_offset);
      });
      continue;
    }
    ++layout.allocated_blocks;
    layout.data_end = std::max(layout.data_end, start + block_total);
    auto over = std::ranges::find_if(metadata, [&](const Range& range) {
      return start < range.end && range.start < start + block_total;
    });
    if (over != metadata.end()) {
      add_problem(layout, LayoutProblem::Kind::kEntryOverlap, entry, [&] {
        return fmt::format("the block of BAT entry {} (offset {}) overlaps {} (offset {})", i,
                           start, over->what, over->start);
      });
      continue;
    }
    starts.push_back(bat[i]);
  }
  std::ranges::sort(starts);
  const uint64_t block_sectors = block_total / 512;
  // The entry that points at a sector (a linear search, done only for reported problems).
  auto entry_at = [&](uint32_t sector, uint32_t not_this) {
    for (size_t i = 0; i < bat.size(); ++i) {
      if (bat[i] == sector && i != not_this) return static_cast<uint32_t>(i);
    }
    return not_this;
  };
  for (size_t k = 1; k < starts.size(); ++k) {
    if (uint64_t{starts[k]} >= uint64_t{starts[k - 1]} + block_sectors) continue;
    ++layout.problem_count;
    if (layout.problems.size() >= kMaxLayoutProblems) continue;
    uint32_t culprit = entry_at(starts[k], UINT32_MAX);
    uint32_t other = entry_at(starts[k - 1], culprit);
    layout.problems.push_back(
        {LayoutProblem::Kind::kEntryOverlap, culprit,
         fmt::format("the block of BAT entry {} (offset {}) overlaps the block of BAT entry {} "
                     "(offset {})",
                     culprit, uint64_t{starts[k]} * 512, other, uint64_t{starts[k - 1]} * 512)});
  }
  layout.data_end = std::max(layout.data_end, layout.metadata_end);
  return layout;
}

}  // namespace lamina::storage::vhd
