#include "storage/vhdx_operations.h"

#include <fmt/format.h>
#include <algorithm>
#include <filesystem>
#include <vector>

#include "storage/staged_file.h"
#include "storage/vhdx_device.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {

namespace {

using vhdx::VhdxDevice;

constexpr uint64_t kCopyChunk = 4 << 20;

// An opened VHDX as its device type (open_vhdx only ever makes VhdxDevice).
struct Opened {
  std::unique_ptr<BlockDevice> device;
  VhdxDevice& vhdx() { return static_cast<VhdxDevice&>(*device); }
};

// alone: without the parent (its own sectors only), so the parent can be opened for writing.
Result<Opened> open_device(const std::string& path, bool read_only, const ImageAccess& access,
                           bool alone = false) {
  auto device = alone ? open_vhdx_alone(path, read_only) : open_vhdx(path, read_only, access);
  if (!device) return fail(device.error());
  if (dynamic_cast<VhdxDevice*>(device->get()) == nullptr) {
    return fail(ErrorCode::kInternal, fmt::format("{}: not opened as a VHDX device", path));
  }
  return Opened{std::move(*device)};
}

uint64_t file_size_of(const std::string& path) {
  std::error_code ignored;
  return std::filesystem::file_size(path, ignored);
}

// Copies every run `source` itself defines below `limit` into `target` (zero runs as zeros).
// Returns the bytes copied; `interrupted` is the failure a cancelled copy returns.
Result<uint64_t> copy_own_runs(VhdxDevice& source, BlockDevice& target, uint64_t limit,
                               const Progress& progress, std::string_view interrupted) {
  std::vector<std::byte> buffer(kCopyChunk);
  const uint64_t block_size = source.layout().block_size;
  const uint64_t blocks = source.layout().data_blocks;
  uint64_t copied = 0;
  for (uint64_t block = 0; block < blocks; ++block) {
    auto runs = source.own_runs(block);
    if (!runs) return fail(runs.error());
    for (const VhdxDevice::OwnRun& run : *runs) {
      if (run.offset >= limit) continue;
      uint64_t length = std::min(run.length, limit - run.offset);
      if (run.zero) {
        if (auto zeroed = target.write_zeroes(run.offset, length, true); !zeroed)
          return fail(zeroed.error());
      } else {
        for (uint64_t done = 0; done < length;) {
          auto piece = std::span(buffer).first(
              static_cast<size_t>(std::min<uint64_t>(length - done, buffer.size())));
          if (auto read = source.read(run.offset + done, piece); !read) return fail(read.error());
          if (auto written = target.write(run.offset + done, piece); !written)
            return fail(written.error());
          done += piece.size();
        }
      }
      copied += length;
    }
    if (progress && !progress((block + 1) * block_size, blocks * block_size)) {
      return fail(interrupted_error(interrupted));
    }
  }
  return copied;
}

Result<vhdx::Guid> guid_of(const std::string& text, const std::string& path) {
  auto guid = vhdx::parse_guid(text);
  if (!guid) return fail(ErrorCode::kCorrupt, fmt::format("{}: bad GUID '{}'", path, text));
  return *guid;
}

// Replays a pending log into the file (a read-write open does it; 2.3.3). Content and
// DataWriteGuid stay the same, so children stay linked.
Result<void> replay_pending_log(const std::string& path, const ImageAccess& access) {
  auto info = inspect_vhdx(path, access);
  if (!info) return fail(info.error());
  if (!info->log_replay_pending) return {};
  auto opened = open_vhdx(path, false, access);
  if (!opened) return fail(opened.error());
  return {};
}

// Rewrites a differencing disk through a staged file: same identity, only its own runs, and
// (when given) parent_linkage2.
Result<void> rewrite_child(const std::string& path, const VhdxInfo& info,
                           const std::string& linkage2, const Progress& progress,
                           std::string_view interrupted, const ImageAccess& access) {
  // A new child needs its parent without a pending log (e.g. a merge killed while writing it).
  if (auto replayed = replay_pending_log(info.parent_resolved, access); !replayed) return replayed;
  auto source = open_device(path, true, access);
  if (!source) return fail(source.error());
  auto staged = StagedFile::prepare(path, true);
  if (!staged) return fail(staged.error());
  VhdxDifferencingOptions options{info.virtual_disk_id, info.data_write_guid, linkage2};
  if (auto created = create_vhdx_differencing(staged->temporary_path(), info.parent_resolved,
                                              options);
      !created)
    return fail(created.error().with_context(path));
  auto target = open_device(staged->temporary_path(), false, access);
  if (!target) return fail(target.error());
  auto guid = guid_of(info.data_write_guid, path);
  if (!guid) return fail(guid.error());
  target->vhdx().set_session_data_write_guid(*guid);
  auto copied = copy_own_runs(source->vhdx(), *target->device, source->device->size(), progress,
                              interrupted);
  if (!copied) return fail(copied.error());
  if (auto flushed = target->device->flush(); !flushed) return flushed;
  target->device.reset();
  source->device.reset();
  return staged->commit();
}

Result<VhdxInfo> inspect_differencing(const std::string& path, std::string_view action,
                                      const ImageAccess& access) {
  auto info = inspect_vhdx(path, access);
  if (!info) return fail(info.error());
  if (info->type == VhdxType::kDifferencing && info->parent_resolved.empty()) {
    return fail(ErrorCode::kNotFound,
                fmt::format("{}: parent '{}' not found; cannot {}", path, info->parent_path,
                            action));
  }
  return info;
}

}  // namespace

Result<void> create_vhdx_child(const std::string& path, const std::string& parent,
                               bool overwrite) {
  auto staged = StagedFile::prepare(path, overwrite);
  if (!staged) return fail(staged.error());
  // The staged file lies in the destination's folder, so the relative locator is the same.
  if (auto created = create_vhdx_differencing(staged->temporary_path(), parent); !created)
    return fail(created.error().with_context(path));
  if (auto committed = staged->commit(); !committed) return committed;
  // Prove the new child resolves its parent from where it now lies. The user named the parent,
  // so its folder is allowed for this check (later opens need the same permission).
  ImageAccess access;
  std::filesystem::path parent_folder = std::filesystem::path(parent).parent_path();
  access.references.allowed_folders = {parent_folder.empty() ? "." : parent_folder};
  auto child = open_vhdx(path, true, access);
  if (!child) return fail(child.error());
  return {};
}

Result<void> resize_vhdx(const std::string& path, uint64_t new_size, bool allow_shrink,
                         const Progress& progress, const ImageAccess& access) {
  auto info = inspect_vhdx(path, access);
  if (!info) return fail(info.error());
  if (info->type == VhdxType::kDifferencing) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: a differencing VHDX keeps its parent's size; merge it, or resize "
                            "the parent and make a new differencing disk", path));
  }
  if (new_size == 0 || new_size > vhdx::kMaxVirtualSize ||
      new_size % info->logical_sector_size != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("new size {} must be a non-zero multiple of the {}-byte logical "
                            "sector, at most 64 TiB (MS-VHDX 2.6.2.2)",
                            new_size, info->logical_sector_size));
  }
  if (new_size < info->virtual_size && !allow_shrink) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: shrinking from {} to {} bytes drops the data past the new end; "
                            "pass --shrink to do it", path, info->virtual_size, new_size));
  }
  if (new_size == info->virtual_size) return {};
  auto image = open_device(path, false, access);
  if (!image) return fail(image.error());
  if (image->vhdx().bat_fits(new_size)) {
    if (auto resized = image->vhdx().resize(new_size); !resized) return resized;
    return image->device->flush();
  }
  // The BAT region is too small: a staged copy with a BAT sized for the new size.
  auto staged = StagedFile::prepare(path, true);
  if (!staged) return fail(staged.error());
  VhdxOptions options;
  options.type = info->type;
  options.block_size = info->block_size;
  options.logical_sector_size = info->logical_sector_size;
  options.physical_sector_size = info->physical_sector_size;
  options.virtual_disk_id = info->virtual_disk_id;
  if (auto created = create_vhdx(staged->temporary_path(), new_size, options); !created)
    return fail(created.error().with_context(path));
  auto target = open_vhdx(staged->temporary_path(), false, access);
  if (!target) return fail(target.error());
  if (auto copied = copy_content(*image->device, **target, progress); !copied) return copied;
  if (auto flushed = (*target)->flush(); !flushed) return flushed;
  target->reset();
  image->device.reset();
  return staged->commit();
}

Result<std::pair<uint64_t, uint64_t>> compact_vhdx(const std::string& path,
                                                   const Progress& progress,
                                                   const ImageAccess& access) {
  auto info = inspect_differencing(path, "compact", access);
  if (!info) return fail(info.error());
  const uint64_t before = file_size_of(path);
  if (info->type == VhdxType::kFixed) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: compact works on dynamic and differencing VHDX only (a fixed "
                            "disk keeps every block allocated)", path));
  }
  if (info->type == VhdxType::kDifferencing) {
    // Its own sectors all stay, zeros too: they hide the parent's data.
    if (auto rewritten = rewrite_child(path, *info, "", progress, "the image is unchanged", access);
        !rewritten)
      return fail(rewritten.error());
    return std::pair{before, file_size_of(path)};
  }
  auto source = open_device(path, true, access);
  if (!source) return fail(source.error());
  auto staged = StagedFile::prepare(path, true);
  if (!staged) return fail(staged.error());
  VhdxOptions options;
  options.block_size = info->block_size;
  options.logical_sector_size = info->logical_sector_size;
  options.physical_sector_size = info->physical_sector_size;
  options.virtual_disk_id = info->virtual_disk_id;
  options.data_write_guid = info->data_write_guid;
  if (auto created = create_vhdx(staged->temporary_path(), info->virtual_size, options); !created)
    return fail(created.error().with_context(path));
  auto target = open_device(staged->temporary_path(), false, access);
  if (!target) return fail(target.error());
  auto guid = guid_of(info->data_write_guid, path);
  if (!guid) return fail(guid.error());
  // Same content, same DataWriteGuid: differencing disks over this one stay linked.
  target->vhdx().set_session_data_write_guid(*guid);
  // copy_content skips zero blocks and all-zero 64 KiB pieces, so those stay unallocated.
  if (auto copied = copy_content(*source->device, *target->device, progress); !copied)
    return fail(copied.error());
  if (auto flushed = target->device->flush(); !flushed) return fail(flushed.error());
  target->device.reset();
  source->device.reset();
  if (auto committed = staged->commit(); !committed) return fail(committed.error());
  return std::pair{before, file_size_of(path)};
}

Result<uint64_t> merge_vhdx(const std::string& child_path, const Progress& progress,
                            const ImageAccess& access) {
  auto info = inspect_differencing(child_path, "merge", access);
  if (!info) return fail(info.error());
  if (info->type != VhdxType::kDifferencing) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is not a differencing disk; only those can be merged",
                            child_path));
  }
  // Opening checks the whole chain and the parent linkage before anything is written.
  if (auto opened = open_vhdx(child_path, true, access); !opened) return fail(opened.error());
  const std::string parent_path = info->parent_resolved;
  // 1. The child learns the parent's next DataWriteGuid as parent_linkage2 (MS-VHDX 2.6.2.6.3),
  //    so it keeps opening while and after the parent changes.
  const vhdx::Guid next_parent_guid = vhdx::random_guid();
  if (auto rewritten = rewrite_child(child_path, *info, next_parent_guid.to_string(), progress,
                                     "nothing was merged; the child is unchanged", access);
      !rewritten)
    return fail(rewritten.error());
  // 2. The child's own sectors go into the parent, stamped with that DataWriteGuid. The child
  //    is read without its parent, whose shared lock would refuse the writer.
  auto child = open_device(child_path, true, access, true);
  if (!child) return fail(child.error());
  auto parent = open_device(parent_path, false, access);
  if (!parent) return fail(parent.error());
  parent->vhdx().set_session_data_write_guid(next_parent_guid);
  auto merged = copy_own_runs(
      child->vhdx(), *parent->device, std::min(child->device->size(), parent->device->size()),
      progress,
      "the parent holds part of the child's data; the child still reads the same and can be "
      "merged again");
  if (!merged) return fail(merged.error());
  if (auto flushed = parent->device->flush(); !flushed) return fail(flushed.error());
  parent->device.reset();
  child->device.reset();
  // 3. The child becomes an empty differencing disk over the updated parent (same identity).
  auto staged = StagedFile::prepare(child_path, true);
  if (!staged) return fail(staged.error());
  VhdxDifferencingOptions options{info->virtual_disk_id, info->data_write_guid, ""};
  if (auto created = create_vhdx_differencing(staged->temporary_path(), parent_path, options);
      !created)
    return fail(created.error().with_context(child_path));
  if (auto committed = staged->commit(); !committed) return fail(committed.error());
  if (auto reopened = open_vhdx(child_path, true, access); !reopened) return fail(reopened.error());
  return *merged;
}

}  // namespace lamina::storage
