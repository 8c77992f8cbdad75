// The VHDX row of the format table: probe, open, create (fixed, dynamic), inspect with the
// parent chain, and check (whose repair replays a pending log).
#include <fmt/format.h>

#include "storage/image_format.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {

namespace {

constexpr int kMaxChain = 16;

bool probe_vhdx(const ProbeBytes& bytes) { return looks_like_vhdx(bytes.head); }

Result<std::unique_ptr<BlockDevice>> open_entry(const std::string& path, bool writable,
                                                const ImageAccess& access) {
  return open_vhdx(path, !writable, access);
}

Result<std::unique_ptr<BlockDevice>> create_entry(const std::string& path,
                                                  const CreateOptions& options) {
  if (options.azure) return fail(ErrorCode::kInvalidArgument, "--azure needs --format vhd");
  VhdxOptions vhdx;
  if (options.type.empty() || options.type == "dynamic") {
    vhdx.type = VhdxType::kDynamic;
  } else if (options.type == "fixed") {
    vhdx.type = VhdxType::kFixed;
  } else {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("VHDX type '{}' is not 'dynamic' or 'fixed'", options.type));
  }
  if (options.block_size != 0) vhdx.block_size = options.block_size;
  if (auto created = create_vhdx(path, options.size, vhdx); !created) return fail(created.error());
  return open_vhdx(path, false);
}

std::string_view type_name(VhdxType type) {
  switch (type) {
    case VhdxType::kFixed: return "fixed";
    case VhdxType::kDynamic: return "dynamic";
    case VhdxType::kDifferencing: return "differencing";
  }
  return "unknown";
}

ImageInfo describe(const std::string& path, const VhdxInfo& vhdx) {
  ImageInfo info;
  info.path = path;
  info.format = "vhdx";
  info.virtual_size = vhdx.virtual_size;
  info.file_size = vhdx.file_size;
  auto add = [&](std::string key, std::variant<std::string, uint64_t, bool> value) {
    info.fields.push_back({std::move(key), std::move(value)});
  };
  add("type", std::string(type_name(vhdx.type)));
  add("block_size", uint64_t{vhdx.block_size});
  add("logical_sector_size", uint64_t{vhdx.logical_sector_size});
  add("physical_sector_size", uint64_t{vhdx.physical_sector_size});
  add("allocated_bytes", vhdx.allocated_bytes);
  add("virtual_disk_id", vhdx.virtual_disk_id);
  add("data_write_guid", vhdx.data_write_guid);
  add("log_replay_pending", vhdx.log_replay_pending);
  if (vhdx.type == VhdxType::kDifferencing) {
    add("parent", vhdx.parent_path);
    add("parent_linkage", vhdx.parent_linkage);
  }
  if (vhdx.log_replay_pending) {
    info.warnings.push_back(
        "the log needs replay (shown replayed in memory; `check --repair` "
        "or any read-write open writes it)");
  }
  return info;
}

Result<ImageInfo> inspect_entry(const std::string& path, const ImageAccess& access) {
  auto vhdx = inspect_vhdx(path, access);
  if (!vhdx) return fail(vhdx.error());
  ImageInfo info = describe(path, *vhdx);
  VhdxInfo link = *vhdx;
  for (int depth = 1; link.type == VhdxType::kDifferencing; ++depth) {
    if (link.parent_resolved.empty()) {
      info.warnings.push_back(fmt::format("parent '{}' not found", link.parent_path));
      break;
    }
    if (depth > kMaxChain) {
      info.warnings.push_back(fmt::format("parent chain deeper than {} disks", kMaxChain));
      break;
    }
    std::string parent_path = link.parent_resolved;
    auto parent = inspect_vhdx(parent_path, access);
    if (!parent) return fail(parent.error().with_context(fmt::format("{}: parent", path)));
    if (parent->data_write_guid != link.parent_linkage) {
      info.warnings.push_back(
          fmt::format("parent {} changed since this disk was made", parent_path));
    }
    info.backing_chain.push_back(describe(parent_path, *parent));
    link = *parent;
  }
  return info;
}

Result<CheckReport> check_entry(const std::string& path, bool repair, const ImageAccess& access) {
  CheckReport report;
  // Opening validates every structure (checksums, regions, metadata, each BAT entry against
  // the file and the other structures, the parent link); damage is reported, not thrown.
  ImageAccess reading = access;
  reading.force_share = access.force_share && !repair;
  auto vhdx = inspect_vhdx(path, reading);
  if (!vhdx) {
    if (vhdx.error().code() != ErrorCode::kCorrupt) return fail(vhdx.error());
    report.problems.push_back({vhdx.error().message(), true, false});
    return report;
  }
  if (auto opened = open_vhdx(path, true, reading); !opened) {
    report.problems.push_back({opened.error().message(), true, false});
  }
  if (vhdx->log_replay_pending) {
    bool repaired = false;
    if (repair) {
      // A read-write open replays the log into the file and clears the LogGuid.
      auto opened = open_vhdx(path, false, access);
      if (!opened) return fail(opened.error());
      repaired = true;
    }
    report.problems.push_back({"the log has not been replayed into the file", true, repaired});
  }
  return report;
}

}  // namespace

ImageFormat vhdx_image_format() {
  return ImageFormat{"vhdx",       "Microsoft Hyper-V VHDX (fixed, dynamic, differencing)",
                     probe_vhdx,   open_entry,
                     create_entry, inspect_entry,
                     check_entry};
}

}  // namespace lamina::storage
