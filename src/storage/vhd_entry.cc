// The VHD row of the format table: probe, open, create, inspect and check for VHD files.

#include <fmt/format.h>

#include "base/size.h"
#include "storage/image_format.h"
#include "storage/vhd_check.h"
#include "storage/vhd_create.h"
#include "storage/vhd_image.h"

namespace lamina::storage {

namespace {

bool probe_vhd(const ProbeBytes& bytes) {
  // A fixed disk has its footer only at the end; a dynamic one also at offset 0.
  if (bytes.tail.size() >= vhd::kFooterSize &&
      vhd::has_footer_cookie(bytes.tail.last(vhd::kFooterSize))) {
    return true;
  }
  return vhd::has_footer_cookie(bytes.head);
}

Result<std::unique_ptr<BlockDevice>> open_vhd(const std::string& path, bool writable,
                                              const ImageAccess& access) {
  auto image = VhdImage::open(
      path, {.writable = writable, .durable = true, .open_parent = true, .access = access});
  if (!image) return fail(image.error());
  return std::unique_ptr<BlockDevice>(std::move(*image));
}

Result<std::unique_ptr<BlockDevice>> create_vhd(const std::string& path,
                                                const CreateOptions& options) {
  vhd::CreateSpec spec;
  spec.size = options.size;
  if (options.azure) {
    if (!options.type.empty() && options.type != "fixed") {
      return fail(ErrorCode::kInvalidArgument, "--azure makes fixed VHDs; drop --type dynamic");
    }
    // Azure accepts fixed VHDs whose virtual size is a whole number of MiB.
    spec.size = (options.size + (1u << 20) - 1) / (1u << 20) * (1u << 20);
    spec.type = vhd::DiskType::kFixed;
  } else if (options.type.empty() || options.type == "dynamic") {
    spec.type = vhd::DiskType::kDynamic;
  } else if (options.type == "fixed") {
    spec.type = vhd::DiskType::kFixed;
  } else {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("VHD type '{}' is not 'dynamic' or 'fixed'", options.type));
  }
  if (options.block_size != 0) spec.block_size = options.block_size;
  if (auto valid = vhd::validate_create(spec); !valid) return fail(valid.error());
  {
    // Closed (and its lock dropped) before the image opens it again.
    auto file = HostFile::open(path, HostFile::Mode::kCreateExclusive);
    if (!file) return fail(file.error());
    if (auto r = vhd::write_new_image(*file, spec); !r) return fail(r.error());
  }
  auto image = VhdImage::open(path, {.writable = true, .durable = options.durable, .open_parent = true, .access = {}});
  if (!image) return fail(image.error());
  return std::unique_ptr<BlockDevice>(std::move(*image));
}

Result<ImageInfo> describe(const VhdImage& image) {
  ImageInfo info;
  const vhd::Footer& footer = image.footer();
  info.path = image.path();
  info.format = "vhd";
  info.virtual_size = image.size();
  info.file_size = image.file_size();
  info.warnings = image.warnings();
  auto add = [&](std::string key, std::variant<std::string, uint64_t, bool> value) {
    info.fields.push_back({std::move(key), std::move(value)});
  };
  add("type", vhd::disk_type_name(footer.disk_type));
  add("unique_id", vhd::format_uuid(footer.unique_id));
  std::string creator(footer.creator_application.begin(), footer.creator_application.end());
  for (char& c : creator) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  add("creator_application", creator);
  add("creator_version", fmt::format("{}.{}", footer.creator_version >> 16,
                                     footer.creator_version & 0xffff));
  add("original_size", footer.original_size);
  add("geometry", fmt::format("{}/{}/{}", footer.geometry.cylinders, footer.geometry.heads,
                              footer.geometry.sectors_per_track));
  add("saved_state", footer.saved_state != 0);
  if (const auto& header = image.dynamic_header()) {
    add("block_size", uint64_t{header->block_size});
    add("bat_entries", uint64_t{header->max_table_entries});
    uint64_t allocated = 0;
    for (uint32_t entry : image.bat()) allocated += entry != vhd::kUnusedBatEntry;
    add("allocated_blocks", allocated);
    if (footer.disk_type == vhd::DiskType::kDifferencing) {
      add("parent", image.parent_path());
      add("parent_unique_id", vhd::format_uuid(header->parent_unique_id));
      add("parent_name", vhd::utf16_to_utf8(header->parent_unicode_name));
    }
  }
  for (const VhdImage* parent = image.parent(); parent != nullptr; parent = parent->parent()) {
    auto parent_info = describe(*parent);
    if (!parent_info) return parent_info;
    parent_info->backing_chain.clear();
    info.backing_chain.push_back(std::move(*parent_info));
  }
  return info;
}

Result<ImageInfo> inspect_vhd(const std::string& path, const ImageAccess& access) {
  auto image = VhdImage::open(
      path, {.writable = false, .durable = true, .open_parent = true, .access = access});
  if (!image) return fail(image.error());
  return describe(**image);
}

}  // namespace

ImageFormat vhd_image_format() {
  return ImageFormat{"vhd", "Microsoft Virtual Hard Disk (fixed, dynamic, differencing)",
                     probe_vhd, open_vhd, create_vhd, inspect_vhd, check_vhd};
}

}  // namespace lamina::storage
