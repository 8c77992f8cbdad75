#include "storage/vhdx_image.h"

#include <fmt/format.h>
#include <algorithm>
#include <string_view>

#include "storage/host_file.h"
#include "storage/vhdx_device.h"
#include "storage/vhdx_layout.h"
#include "storage/vhdx_log.h"

namespace lamina::storage {

namespace {

using namespace vhdx;

constexpr int kMaxParentDepth = 16;

struct Opened {
  std::unique_ptr<VhdxDevice> device;
  bool log_pending = false;
};

// Locator paths use '\' (MS-VHDX 2.6.2.6.3); absolute Win32 paths start with "\\?\".
std::filesystem::path host_path(std::string value) {
  if (value.starts_with("\\\\?\\")) value = value.substr(4);
  std::ranges::replace(value, '\\', '/');
  return std::filesystem::path(value);
}

// Where the parent may be, in the order 2.6.2.6.3 gives: relative_path, then the absolute path,
// each resolved under the reference policy. Absent names are skipped; `refused` says why an
// existing one was not allowed.
std::vector<std::filesystem::path> parent_candidates(const std::filesystem::path& child,
                                                     const Layout& layout,
                                                     const ReferencePolicy& policy,
                                                     std::vector<std::string>& refused) {
  std::vector<std::filesystem::path> candidates;
  for (std::string_view key : {"relative_path", "absolute_win32_path"}) {
    std::string value = layout.locator(key);
    if (value.empty()) continue;
    auto resolved = resolve_reference(child, host_path(value).string(), "parent", policy);
    if (resolved) {
      candidates.push_back(*resolved);
    } else if (resolved.error().code() != ErrorCode::kNotFound) {
      refused.push_back(resolved.error().message());
    }
  }
  return candidates;
}

Result<Opened> open_at_depth(const std::filesystem::path& path, bool read_only, bool with_parent,
                             int depth, const ImageAccess& access);

Result<std::unique_ptr<BlockDevice>> open_parent(const std::filesystem::path& child,
                                                 const Layout& layout, int depth,
                                                 const ImageAccess& access) {
  std::string name = child.filename().string();
  std::vector<std::string> refused;
  std::vector<std::filesystem::path> candidates =
      parent_candidates(child, layout, access.references, refused);
  std::vector<Guid> linkages;
  for (std::string_view key : {"parent_linkage", "parent_linkage2"}) {
    if (auto guid = parse_guid(layout.locator(key))) linkages.push_back(*guid);
  }
  if (linkages.empty())
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: parent locator has no valid parent_linkage", name));
  for (const auto& candidate : candidates) {
    auto parent = open_at_depth(candidate, true, true, depth + 1, access);
    if (!parent) return fail(parent.error().with_context(fmt::format("{}: parent", name)));
    const Layout& parent_layout = parent->device->layout();
    // 2.6.2.6.3: the parent's DataWriteGuid must match a linkage, or the parent has changed.
    if (std::ranges::find(linkages, parent_layout.header.data_write_guid) == linkages.end()) {
      return fail(
          ErrorCode::kCorrupt,
          // No GUIDs in the message: the candidate may be a file the user did not name.
          fmt::format("{}: parent {} was modified after the differencing disk was made "
                      "(its DataWriteGuid is not the linkage the child records)",
                      name, candidate.string()));
    }
    if (parent_layout.logical_sector_size != layout.logical_sector_size) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("{}: parent {} has a different logical sector size", name,
                              candidate.string()));
    }
    return std::unique_ptr<BlockDevice>(std::move(parent->device));
  }
  if (!refused.empty()) return fail(ErrorCode::kInvalidArgument, refused.front());
  return fail(
      ErrorCode::kNotFound,
      fmt::format("{}: parent disk not found (relative_path '{}', absolute_win32_path '{}')", name,
                  layout.locator("relative_path"), layout.locator("absolute_win32_path")));
}

Result<Opened> open_at_depth(const std::filesystem::path& path, bool read_only, bool with_parent,
                             int depth, const ImageAccess& access) {
  if (depth > kMaxParentDepth) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: differencing chain deeper than {} disks (a loop?)", path.string(),
                            kMaxParentDepth));
  }
  // Parents (depth > 0) are files the image names: regular files only.
  auto file = HostFile::open(path.string(),
                             read_only ? HostFile::Mode::kRead : HostFile::Mode::kReadWrite,
                             {.force_share = access.force_share && read_only,
                              .regular_only = depth > 0,
                              .granted = access.references.granted});
  if (!file) return fail(file.error());
  int slot = 0;
  auto header = read_current_header(*file, slot);
  if (!header) return fail(header.error());
  Opened opened;
  std::unique_ptr<LogOverlay> overlay;
  if (!header->log_guid.is_zero()) {
    opened.log_pending = true;
    auto replay = read_log(*file, *header);
    if (!replay) return fail(replay.error());
    if (read_only) {
      overlay = std::make_unique<LogOverlay>(std::move(*replay));
    } else if (auto applied = apply_log(*file, *replay); !applied) {
      return fail(applied.error());
    }
  }
  FileView view(*file, overlay.get());
  auto parsed = parse_image(view, *header, slot);
  if (!parsed) return fail(parsed.error());
  std::unique_ptr<BlockDevice> parent;
  if (parsed->layout.has_parent && with_parent) {
    auto opened_parent = open_parent(path, parsed->layout, depth, access);
    if (!opened_parent) return fail(opened_parent.error());
    parent = std::move(*opened_parent);
  }
  bool replayed_into_file = opened.log_pending && !read_only;
  opened.device = std::make_unique<VhdxDevice>(std::move(*file), std::move(overlay),
                                               std::move(*parsed), std::move(parent));
  if (replayed_into_file) {
    if (auto cleared = opened.device->clear_log_guid(); !cleared) return fail(cleared.error());
  }
  return opened;
}

}  // namespace

bool looks_like_vhdx(std::span<const std::byte> first_bytes) {
  return first_bytes.size() >= kFileSignature.size() &&
         std::string_view(reinterpret_cast<const char*>(first_bytes.data()),
                          kFileSignature.size()) == kFileSignature;
}

Result<VhdxInfo> inspect_vhdx(const std::filesystem::path& path, const ImageAccess& access) {
  auto opened = open_at_depth(path, true, false, 0, access);
  if (!opened) return fail(opened.error());
  const Layout& layout = opened->device->layout();
  VhdxInfo info;
  info.type = layout.has_parent              ? VhdxType::kDifferencing
              : layout.leave_block_allocated ? VhdxType::kFixed
                                             : VhdxType::kDynamic;
  info.virtual_size = layout.virtual_size;
  info.block_size = layout.block_size;
  info.logical_sector_size = layout.logical_sector_size;
  info.physical_sector_size = layout.physical_sector_size;
  std::error_code error;
  info.file_size = std::filesystem::file_size(path, error);
  info.log_replay_pending = opened->log_pending;
  info.virtual_disk_id = layout.virtual_disk_id.to_string();
  info.data_write_guid = layout.header.data_write_guid.to_string();
  info.parent_path = layout.locator("relative_path");
  if (info.parent_path.empty()) info.parent_path = layout.locator("absolute_win32_path");
  info.parent_linkage = layout.locator("parent_linkage");
  std::vector<std::string> refused;
  auto candidates = parent_candidates(path, layout, access.references, refused);
  if (!candidates.empty()) info.parent_resolved = candidates.front().string();
  info.allocated_bytes = opened->device->allocated_bytes();
  return info;
}

Result<std::unique_ptr<BlockDevice>> open_vhdx(const std::filesystem::path& path, bool read_only,
                                               const ImageAccess& access) {
  auto opened = open_at_depth(path, read_only, true, 0, access);
  if (!opened) return fail(opened.error());
  return std::unique_ptr<BlockDevice>(std::move(opened->device));
}

Result<std::unique_ptr<BlockDevice>> open_vhdx_alone(const std::filesystem::path& path,
                                                     bool read_only) {
  auto opened = open_at_depth(path, read_only, false, 0, {});
  if (!opened) return fail(opened.error());
  return std::unique_ptr<BlockDevice>(std::move(opened->device));
}

}  // namespace lamina::storage
