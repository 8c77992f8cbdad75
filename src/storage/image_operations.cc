#include "storage/image_operations.h"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "storage/host_file.h"
#include "storage/staged_file.h"
#include "storage/vhd_check.h"
#include "storage/vhd_create.h"
#include "storage/vhd_image.h"
#include "storage/vhdx_operations.h"

namespace lamina::storage {

namespace {

constexpr uint64_t kCopyChunk = 4 << 20;

uint64_t round_up_sector(uint64_t bytes) { return (bytes + kSectorSize - 1) / kSectorSize * kSectorSize; }

Result<std::unique_ptr<VhdImage>> open_vhd(const std::string& path, bool writable,
                                           const ImageAccess& access = {}) {
  auto format = detect_format(path);
  if (!format) return fail(format.error());
  if ((*format)->name != "vhd") {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is a {} image; this needs a VHD", path, (*format)->name));
  }
  return VhdImage::open(path,
                        {.writable = writable, .durable = true, .open_parent = true, .access = access});
}

// Copies [offset, offset + length) from source to destination in chunks.
Result<void> copy_range(BlockDevice& source, BlockDevice& destination, uint64_t offset,
                        uint64_t length, std::vector<std::byte>& buffer) {
  while (length > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(length, buffer.size()));
    auto span = std::span(buffer).first(n);
    if (auto r = source.read(offset, span); !r) return r;
    if (auto r = destination.write(offset, span); !r) return r;
    offset += n;
    length -= n;
  }
  return {};
}

Result<void> check_clean(const std::string& path, const ImageAccess& access) {
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

}  // namespace

Error interrupted_error(std::string_view what) {
  return Error(ErrorCode::kInvalidArgument, fmt::format("interrupted; {}", what));
}

Result<void> create_image(const std::string& path, std::string_view format_name,
                          const CreateOptions& options, bool overwrite) {
  const ImageFormat* format = find_format(format_name);
  if (format == nullptr || format->create == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("format '{}' cannot be written (vhd, vhdx, raw can)", format_name));
  }
  auto staged = StagedFile::prepare(path, overwrite);
  if (!staged) return fail(staged.error());
  auto image = format->create(staged->temporary_path(), options);
  if (!image) return fail(image.error().with_context(path));
  if (auto r = (*image)->flush(); !r) return r;
  image->reset();
  return staged->commit();
}

Result<void> create_differencing(const std::string& path, const std::string& parent,
                                 bool overwrite) {
  auto parent_format = detect_format(parent);
  if (!parent_format) return fail(parent_format.error());
  // A chain stays in one format: VHD parents locate VHD parents, VHDX parents VHDX ones.
  if ((*parent_format)->name == "vhdx") return create_vhdx_child(path, parent, overwrite);
  if ((*parent_format)->name != "vhd") {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is a {} image; a differencing disk needs a VHD or VHDX parent",
                            parent, (*parent_format)->name));
  }
  auto parent_image = open_vhd(parent, false);
  if (!parent_image) return fail(parent_image.error());
  auto link = vhd::link_to_parent(parent);
  if (!link) return fail(link.error());
  auto staged = StagedFile::prepare(path, overwrite);
  if (!staged) return fail(staged.error());
  // The locators are computed against the final path, then the file is staged beside it.
  vhd::CreateSpec spec;
  spec.type = vhd::DiskType::kDifferencing;
  spec.size = (*parent_image)->size();
  spec.block_size = (*parent_image)->block_size() != 0 ? static_cast<uint32_t>((*parent_image)->block_size())
                                                       : vhd::kDefaultBlockSize;
  spec.parent = *link;
  {
    auto file = HostFile::open(staged->temporary_path(), HostFile::Mode::kCreateExclusive);
    if (!file) return fail(file.error());
    if (auto r = vhd::write_new_image(*file, spec); !r) return fail(r.error().with_context(path));
  }
  if (auto r = staged->commit(); !r) return r;
  // Prove the new child resolves its parent from where it now lies. The user named the parent,
  // so its folder is allowed for this check (later opens need the same permission).
  VhdImage::Options options{.writable = false, .durable = true, .open_parent = true, .access = {}};
  options.access.references.allowed_folders = {std::filesystem::path(parent).parent_path()};
  if (options.access.references.allowed_folders.front().empty()) {
    options.access.references.allowed_folders.front() = ".";
  }
  auto child = VhdImage::open(path, options);
  if (!child) return fail(child.error());
  return {};
}

Result<void> convert_image(const std::string& source_path, const std::string& destination_path,
                           const ConvertOptions& options, const Progress& progress) {
  const ImageFormat* format = find_format(options.format);
  if (format == nullptr || format->create == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("format '{}' cannot be written (vhd, vhdx, raw can)", options.format));
  }
  auto source = open_image(source_path, false, options.source_access);
  if (!source) return fail(source.error());
  auto staged = StagedFile::prepare(destination_path, options.overwrite);
  if (!staged) return fail(staged.error());
  CreateOptions create = options.create;
  create.size = round_up_sector((*source)->size());
  create.durable = false;  // staged: crash consistency comes from the final rename
  auto destination = format->create(staged->temporary_path(), create);
  if (!destination) return fail(destination.error().with_context(destination_path));
  if (auto r = copy_content(**source, **destination, progress); !r) return r;
  if (auto r = (*destination)->flush(); !r) return r;
  destination->reset();
  return staged->commit();
}

Result<uint64_t> merge_image(const std::string& child_path, const Progress& progress,
                             const ImageAccess& access) {
  auto format = detect_format(child_path);
  if (!format) return fail(format.error());
  if ((*format)->name == "vhdx") return merge_vhdx(child_path, progress, access);
  auto child = open_vhd(child_path, false, access);
  if (!child) return fail(child.error());
  if ((*child)->footer().disk_type != vhd::DiskType::kDifferencing) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is not a differencing disk; only those can be merged", child_path));
  }
  const std::string parent_path = (*child)->parent_path();
  // Refuse before writing anything if either file has a problem.
  if (auto r = check_clean(child_path, access); !r) return fail(r.error());
  if (auto r = check_clean(parent_path, access); !r) return fail(r.error());
  // The child reads only its own sectors from here on; its hold on the parent (a shared lock)
  // would refuse the parent's writer.
  child->reset();
  auto own = VhdImage::open(child_path, {.writable = false, .durable = true, .open_parent = false, .access = {}});
  if (!own) return fail(own.error());
  *child = std::move(*own);
  auto parent = VhdImage::open(
      parent_path, {.writable = true, .durable = true, .open_parent = true, .access = access});
  if (!parent) return fail(parent.error());
  const vhd::DynamicHeader& header = *(*child)->dynamic_header();
  std::vector<std::byte> buffer(kCopyChunk);
  uint64_t merged = 0;
  const auto& bat = (*child)->bat();
  const uint64_t limit = std::min((*child)->size(), (*parent)->size());
  for (uint32_t block = 0; block < bat.size(); ++block) {
    auto runs = (*child)->own_sector_runs(block);
    if (!runs) return fail(runs.error());
    for (auto [first, count] : *runs) {
      uint64_t offset = first * kSectorSize;
      if (offset >= limit) continue;
      uint64_t length = std::min(count * kSectorSize, limit - offset);
      if (auto r = copy_range(**child, **parent, offset, length, buffer); !r) return fail(r.error());
      merged += length;
    }
    if (progress && !progress(uint64_t{block + 1} * header.block_size,
                              uint64_t{bat.size()} * header.block_size)) {
      // The child is untouched and still reads the same; the parent holds part of its data.
      return fail(interrupted_error("the parent holds part of the child's data; the child is "
                                    "unchanged and can be merged again"));
    }
  }
  if (auto r = (*parent)->flush(); !r) return fail(r.error());
  // The parent now holds everything; the child becomes an empty differencing disk over it
  // (same unique id, fresh parent time stamp). Until the rename it still reads the same data.
  vhd::Uuid child_id = (*child)->footer().unique_id;
  uint64_t size = (*child)->size();
  uint32_t block_size = header.block_size;
  parent->reset();
  child->reset();
  auto link = vhd::link_to_parent(parent_path);
  if (!link) return fail(link.error());
  auto staged = StagedFile::prepare(child_path, true);
  if (!staged) return fail(staged.error());
  vhd::CreateSpec spec{vhd::DiskType::kDifferencing, size, block_size, child_id, *link};
  {
    auto file = HostFile::open(staged->temporary_path(), HostFile::Mode::kCreateExclusive);
    if (!file) return fail(file.error());
    if (auto r = vhd::write_new_image(*file, spec); !r) return fail(r.error());
  }
  if (auto r = staged->commit(); !r) return fail(r.error());
  return merged;
}

}  // namespace lamina::storage
