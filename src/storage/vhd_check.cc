#include "storage/vhd_check.h"

#include <cstring>
#include <fmt/format.h>

#include "base/byte_order.h"
#include "storage/host_file.h"
#include "storage/vhd_image.h"
#include "storage/vhd_layout.h"

namespace lamina::storage {

namespace {

struct Checker {
  HostFile& file;
  bool repair;
  CheckReport report;

  void error(std::string message, bool repaired = false) {
    report.problems.push_back({std::move(message), true, repaired});
  }
  void note(std::string message) { report.problems.push_back({std::move(message), false, false}); }
};

}  // namespace

Result<CheckReport> check_vhd(const std::string& path, bool repair, const ImageAccess& access) {
  auto opened = HostFile::open(path, repair ? HostFile::Mode::kReadWrite : HostFile::Mode::kRead,
                               {.force_share = access.force_share && !repair});
  if (!opened) return fail(opened.error());
  Checker checker{*opened, repair, {}};
  HostFile& file = *opened;
  uint64_t file_size = file.size();
  if (file_size < vhd::kFooterSize) {
    checker.error(fmt::format("file is too small to be a VHD ({} bytes)", file_size));
    return checker.report;
  }
  std::array<std::byte, vhd::kFooterSize> tail{};
  std::array<std::byte, vhd::kFooterSize> head{};
  if (auto r = file.read_at(file_size - vhd::kFooterSize, tail); !r) return fail(r.error());
  if (auto r = file.read_at(0, head); !r) return fail(r.error());
  auto trailing = vhd::parse_footer(tail);
  auto copy = vhd::parse_footer(head);

  vhd::Footer footer;
  uint64_t footer_offset = file_size - vhd::kFooterSize;
  bool rewrite_trailing = false;
  bool rewrite_copy = false;
  if (trailing) {
    footer = *trailing;
    if (footer.disk_type != vhd::DiskType::kFixed &&
        (!copy || std::memcmp(head.data(), tail.data(), vhd::kFooterSize) != 0)) {
      rewrite_copy = true;
      checker.error(copy ? "the footer copy at offset 0 differs from the footer at the end"
                         : "the footer copy at offset 0 is damaged: " + copy.error().message(),
                    repair);
    }
  } else if (copy && copy->disk_type != vhd::DiskType::kFixed) {
    footer = *copy;
    rewrite_trailing = true;
    // A damaged footer is overwritten in place; a missing one is appended after the data.
    if (!vhd::has_footer_cookie(tail)) footer_offset = (file_size + 511) / 512 * 512;
    checker.error("the footer at the end is missing or damaged (" + trailing.error().message() +
                      "); the copy at offset 0 is intact",
                  repair);
  } else {
    checker.error(trailing.error().message());
    return checker.report;
  }
  if (footer.current_size > vhd::kMaxVirtualSize) {
    checker.error(fmt::format("virtual size {} bytes is over the VHD maximum of 2040 GiB",
                              footer.current_size));
    return checker.report;
  }
  if (footer.current_size % 512 != 0) {
    checker.note(fmt::format("virtual size {} is not a whole number of sectors", footer.current_size));
  }

  if (footer.disk_type == vhd::DiskType::kFixed) {
    if (footer_offset < footer.current_size) {
      checker.error(fmt::format("fixed VHD is truncated: {} bytes of data expected, {} present",
                                footer.current_size, footer_offset));
    }
    return checker.report;
  }

  std::array<std::byte, vhd::kDynamicHeaderSize> header_bytes{};
  if (footer.data_offset > file_size ||
      !file.read_at(footer.data_offset, header_bytes)) {
    checker.error(fmt::format("the dynamic header offset {} lies past the end of the file",
                              footer.data_offset));
    return checker.report;
  }
  auto header = vhd::parse_dynamic_header(header_bytes);
  if (!header) {
    checker.error(header.error().message());
    return checker.report;
  }
  const uint64_t block_size = header->block_size;
  if (uint64_t{header->max_table_entries} * block_size < footer.current_size) {
    checker.error(fmt::format("the BAT has {} entries of {} bytes, too few for the virtual size",
                              header->max_table_entries, block_size));
    return checker.report;
  }
  if (header->table_offset > footer_offset ||
      (footer_offset - header->table_offset) / 4 < header->max_table_entries) {
    checker.error(fmt::format("the BAT ({} entries at offset {}) runs past the end of the file",
                              header->max_table_entries, header->table_offset));
    return checker.report;
  }
  auto bat = vhd::read_bat(file, *header);
  if (!bat) return fail(bat.error());

  vhd::Layout layout = vhd::analyze_layout(footer, *header, *bat, footer_offset);
  bat->clear();
  bat->shrink_to_fit();
  const std::vector<uint32_t>& stray = layout.entries_past_end;
  for (const vhd::LayoutProblem& problem : layout.problems) {
    bool fixable = problem.kind == vhd::LayoutProblem::Kind::kEntryPastEnd;
    checker.error(problem.message + (fixable ? "" : " (not repairable: data would be lost)"),
                  fixable && repair);
  }
  if (layout.problem_count > layout.problems.size()) {
    // The rest are counted, not listed: a damaged BAT can hold millions of them.
    bool all_fixable = layout.problem_count == layout.entries_past_end.size();
    checker.error(fmt::format("... and {} more problems like these",
                              layout.problem_count - layout.problems.size()),
                  all_fixable && repair);
  }
  if (layout.problem_count == 0 && layout.data_end < footer_offset) {
    checker.note(fmt::format("{} bytes of the file are not used by any block ('lamina disk "
                             "compact' reclaims them)", footer_offset - layout.data_end));
  }

  if (repair) {
    // BAT first (so no entry points past the footer), then the footers.
    for (uint32_t entry : stray) {
      std::array<std::byte, 4> unused{};
      store_be<uint32_t>(unused.data(), vhd::kUnusedBatEntry);
      if (auto r = file.write_at(header->table_offset + uint64_t{entry} * 4, unused); !r) {
        return fail(r.error());
      }
    }
    if (!stray.empty()) {
      if (auto r = file.flush(); !r) return fail(r.error());
    }
    auto bytes = vhd::serialize_footer(footer);
    if (rewrite_trailing) {
      if (auto r = file.write_at(footer_offset, bytes); !r) return fail(r.error());
      if (auto r = file.truncate(footer_offset + vhd::kFooterSize); !r) return fail(r.error());
    }
    if (rewrite_copy) {
      if (auto r = file.write_at(0, bytes); !r) return fail(r.error());
    }
    if (auto r = file.flush(); !r) return fail(r.error());
  }

  if (footer.disk_type == vhd::DiskType::kDifferencing && checker.report.clean()) {
    // The check's own lock goes first: a writable open would refuse the reader below.
    *opened = HostFile();
    auto image = VhdImage::open(
        path, {.writable = false, .durable = true, .open_parent = true, .access = access});
    if (!image) checker.error(image.error().message());
  }
  return checker.report;
}

}  // namespace lamina::storage
