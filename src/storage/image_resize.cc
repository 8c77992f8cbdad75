// resize and compact (declared in image_operations.h). Resizing changes the image in place in
// an order where a crash leaves either the old or the new size readable; a dynamic VHD whose BAT
// has no room to grow is rewritten through a staged file instead.

#include <algorithm>
#include <fmt/format.h>
#include <vector>

#include "base/byte_order.h"
#include "storage/host_file.h"
#include "storage/image_operations.h"
#include "storage/raw_image.h"
#include "storage/staged_file.h"
#include "storage/vhd_check.h"
#include "storage/vhd_create.h"
#include "storage/vhd_image.h"
#include "storage/vhd_layout.h"
#include "storage/vhdx_operations.h"

namespace lamina::storage {

namespace {

Result<void> refuse_if_broken(const std::string& path, const ImageAccess& access) {
  auto report = check_vhd(path, false, access);
  if (!report) return fail(report.error());
  for (const CheckProblem& problem : report->problems) {
    if (problem.error) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("{}: {} (run 'lamina disk check')", path, problem.message));
    }
  }
  return {};
}

Result<void> zero_range(HostFile& file, uint64_t start, uint64_t end) {
  std::vector<std::byte> zeros(1 << 20);
  while (start < end) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), end - start));
    if (auto r = file.write_at(start, std::span(zeros).first(n)); !r) return r;
    start += n;
  }
  return {};
}

Result<void> resize_fixed(const std::string& path, vhd::Footer footer, uint64_t old_footer_offset,
                          uint64_t new_size) {
  auto file = HostFile::open(path, HostFile::Mode::kReadWrite);
  if (!file) return fail(file.error());
  const uint64_t old_size = footer.current_size;
  footer.current_size = new_size;
  footer.geometry = vhd::geometry_for_size(new_size);
  auto bytes = vhd::serialize_footer(footer);
  if (new_size > old_footer_offset) {
    // Grow: the new footer lands past the old one, then the old footer becomes zero data.
    if (auto r = file->write_at(new_size, bytes); !r) return r;
    if (auto r = file->flush(); !r) return r;
    if (auto r = zero_range(*file, old_size, old_footer_offset + vhd::kFooterSize); !r) return r;
  } else {
    // Shrink (or grow into padding): the old trailing footer stays valid until the truncate.
    if (old_size < new_size) {
      if (auto r = zero_range(*file, old_size, new_size); !r) return r;
    }
    if (auto r = file->write_at(new_size, bytes); !r) return r;
    if (auto r = file->flush(); !r) return r;
    if (auto r = file->truncate(new_size + vhd::kFooterSize); !r) return r;
  }
  return file->flush();
}

Result<void> resize_dynamic_in_place(VhdImage& image, uint64_t new_size) {
  vhd::DynamicHeader header = *image.dynamic_header();
  vhd::Footer footer = image.footer();
  const uint64_t block_size = header.block_size;
  const auto new_entries = static_cast<uint32_t>((new_size + block_size - 1) / block_size);
  const uint32_t old_entries = header.max_table_entries;
  // Shrinking inside a block: zero its tail so a later grow cannot expose stale data.
  if (new_size < image.size() && new_size % block_size != 0 &&
      image.bat()[new_size / block_size] != vhd::kUnusedBatEntry) {
    uint64_t end = std::min(image.size(), (new_size / block_size + 1) * block_size);
    std::vector<std::byte> zeros(end - new_size);
    if (auto r = image.write(new_size, zeros); !r) return r;
  }
  if (auto r = image.flush(); !r) return r;
  const uint64_t footer_offset = image.file_size() - vhd::kFooterSize;
  // Through the image's own file: it holds the writer's lock.
  HostFile* file = &image.file();
  // 1. BAT entries past the new end (shrink) or newly exposed (grow) become unused.
  std::array<std::byte, 4> unused{};
  store_be<uint32_t>(unused.data(), vhd::kUnusedBatEntry);
  for (uint32_t entry = std::min(old_entries, new_entries); entry < std::max(old_entries, new_entries);
       ++entry) {
    if (auto r = file->write_at(header.table_offset + uint64_t{entry} * 4, unused); !r) return r;
  }
  if (auto r = file->flush(); !r) return r;
  // 2. The header's entry count, 3. the footers (end first: it is the authoritative copy).
  header.max_table_entries = new_entries;
  if (auto r = file->write_at(footer.data_offset, vhd::serialize_dynamic_header(header)); !r) return r;
  if (auto r = file->flush(); !r) return r;
  footer.current_size = new_size;
  footer.geometry = vhd::geometry_for_size(new_size);
  auto bytes = vhd::serialize_footer(footer);
  if (auto r = file->write_at(footer_offset, bytes); !r) return r;
  if (auto r = file->write_at(0, bytes); !r) return r;
  return file->flush();
}

// Closes `image` before the staged file replaces it (the replacement needs the writer's lock).
Result<void> rewrite_dynamic(const std::string& path, std::unique_ptr<VhdImage>& owned,
                             uint64_t new_size, const Progress& progress) {
  VhdImage& image = *owned;
  auto staged = StagedFile::prepare(path, true);
  if (!staged) return fail(staged.error());
  vhd::CreateSpec spec;
  spec.type = vhd::DiskType::kDynamic;
  spec.size = new_size;
  spec.block_size = image.dynamic_header()->block_size;
  spec.unique_id = image.footer().unique_id;
  {
    auto file = HostFile::open(staged->temporary_path(), HostFile::Mode::kCreateExclusive);
    if (!file) return fail(file.error());
    if (auto r = vhd::write_new_image(*file, spec); !r) return r;
  }
  auto target = VhdImage::open(staged->temporary_path(),
                               {.writable = true, .durable = false, .open_parent = false, .access = {}});
  if (!target) return fail(target.error());
  if (auto r = copy_content(image, **target, progress); !r) return r;
  if (auto r = (*target)->flush(); !r) return r;
  target->reset();
  owned.reset();
  return staged->commit();
}

}  // namespace

Result<void> resize_image(const std::string& path, uint64_t new_size, bool allow_shrink,
                          const Progress& progress, const ImageAccess& access) {
  auto format = detect_format(path);
  if (!format) return fail(format.error());
  if (new_size == 0 || new_size % kSectorSize != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("new size {} must be a non-zero multiple of 512 bytes", new_size));
  }
  auto shrink_check = [&](uint64_t old_size) -> Result<void> {
    if (new_size < old_size && !allow_shrink) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{}: shrinking from {} to {} bytes drops the data past the new end; "
                              "pass --shrink to do it", path, old_size, new_size));
    }
    return {};
  };
  if ((*format)->name == "raw") {
    auto image = RawImage::open(path, true);
    if (!image) return fail(image.error());
    if (auto r = shrink_check((*image)->size()); !r) return r;
    if (auto r = (*image)->resize(new_size); !r) return r;
    return (*image)->flush();
  }
  if ((*format)->name == "vhdx") {
    return resize_vhdx(path, new_size, allow_shrink, progress, access);
  }
  if ((*format)->name != "vhd") {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: resizing {} images is not supported", path, (*format)->name));
  }
  if (new_size > vhd::kMaxVirtualSize) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("new size {} is over the VHD maximum of 2040 GiB", new_size));
  }
  if (auto r = refuse_if_broken(path, access); !r) return r;
  auto image =
      VhdImage::open(path, {.writable = true, .durable = true, .open_parent = true, .access = access});
  if (!image) return fail(image.error());
  if (auto r = shrink_check((*image)->size()); !r) return r;
  if ((*image)->footer().disk_type == vhd::DiskType::kFixed) {
    vhd::Footer footer = (*image)->footer();
    uint64_t footer_offset = (*image)->file_size() - vhd::kFooterSize;
    image->reset();
    return resize_fixed(path, footer, footer_offset, new_size);
  }
  const vhd::DynamicHeader& header = *(*image)->dynamic_header();
  uint64_t capacity = vhd::bat_bytes(header.max_table_entries) / 4;
  uint64_t needed = (new_size + header.block_size - 1) / header.block_size;
  if (needed <= capacity) return resize_dynamic_in_place(**image, new_size);
  if ((*image)->footer().disk_type == vhd::DiskType::kDifferencing) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: growing this differencing disk needs a larger BAT; merge it or "
                            "resize its base instead", path));
  }
  return rewrite_dynamic(path, *image, new_size, progress);
}

Result<std::pair<uint64_t, uint64_t>> compact_image(const std::string& path,
                                                    const Progress& progress,
                                                    const ImageAccess& access) {
  auto format = detect_format(path);
  if (!format) return fail(format.error());
  if ((*format)->name == "vhdx") return compact_vhdx(path, progress, access);
  auto not_compactable = [&] {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: compact works on dynamic and differencing VHD and VHDX images "
                            "only", path));
  };
  if ((*format)->name != "vhd") return not_compactable();
  auto image = VhdImage::open(
      path, {.writable = false, .durable = true, .open_parent = true, .access = access});
  if (!image) return fail(image.error());
  if (!(*image)->dynamic_header()) return not_compactable();
  if (auto r = refuse_if_broken(path, access); !r) return fail(r.error());
  VhdImage& source = **image;
  const vhd::DynamicHeader& header = *source.dynamic_header();
  const bool differencing = source.footer().disk_type == vhd::DiskType::kDifferencing;
  vhd::CreateSpec spec;
  spec.type = source.footer().disk_type;
  spec.size = source.size();
  spec.block_size = header.block_size;
  spec.unique_id = source.footer().unique_id;
  if (differencing) {
    spec.parent = vhd::ParentLink{source.parent_path(), header.parent_unique_id,
                                  header.parent_time_stamp};
  }
  auto staged = StagedFile::prepare(path, true);
  if (!staged) return fail(staged.error());
  {
    auto file = HostFile::open(staged->temporary_path(), HostFile::Mode::kCreateExclusive);
    if (!file) return fail(file.error());
    if (auto r = vhd::write_new_image(*file, spec); !r) return fail(r.error());
  }
  auto target = VhdImage::open(staged->temporary_path(),
                               {.writable = true, .durable = false, .open_parent = false, .access = {}});
  if (!target) return fail(target.error());
  std::vector<std::byte> buffer(header.block_size);
  const auto& bat = source.bat();
  for (uint32_t block = 0; block < bat.size(); ++block) {
    auto runs = source.own_sector_runs(block);
    if (!runs) return fail(runs.error());
    for (auto [first, count] : *runs) {
      auto span = std::span(buffer).first(static_cast<size_t>(count * kSectorSize));
      if (auto r = source.read(first * kSectorSize, span); !r) return fail(r.error());
      // A dynamic disk's zero sectors read the same unallocated; a differencing disk's mask
      // the parent, so they stay.
      if (!differencing && is_all_zero(span)) continue;
      if (auto r = (*target)->write(first * kSectorSize, span); !r) return fail(r.error());
    }
    if (progress && !progress(uint64_t{block + 1} * header.block_size,
                              uint64_t{bat.size()} * header.block_size)) {
      return fail(interrupted_error("the image is unchanged"));
    }
  }
  if (auto r = (*target)->flush(); !r) return fail(r.error());
  uint64_t before = source.file_size();
  uint64_t after = (*target)->file_size();
  target->reset();
  image->reset();
  if (auto r = staged->commit(); !r) return fail(r.error());
  return std::pair{before, after};
}

}  // namespace lamina::storage
