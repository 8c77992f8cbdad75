#include "mgmt/checkpoint_disks.h"

#include <filesystem>

#include <fmt/format.h>

#include "storage/image_format.h"
#include "virtio/virtio_block.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::mgmt {

std::string replace_disk_path(std::string_view spec, const std::string& new_path) {
  // The path ends at the first single comma (",," is a comma inside it).
  size_t end = 0;
  while (end < spec.size()) {
    if (spec[end] == ',') {
      if (end + 1 < spec.size() && spec[end + 1] == ',') {
        end += 2;
        continue;
      }
      break;
    }
    ++end;
  }
  std::string escaped;
  for (char c : new_path) {
    escaped += c;
    if (c == ',') escaped += ',';
  }
  std::string options(spec.substr(end));
  auto parsed = virtio::parse_disk_spec(spec);
  if (parsed && parsed->serial.empty()) {
    options += ",serial=" + virtio::derive_block_serial(parsed->path);
  }
  return escaped + options;
}

std::string child_image_path(const std::string& parent, std::string_view tag) {
  const std::filesystem::path path(parent);
  std::string stem = path.stem().string();
  if (auto at = stem.find('@'); at != std::string::npos) stem.resize(at);
  const std::string extension = path.extension().string();
  for (int attempt = 1;; ++attempt) {
    std::string name = fmt::format("{}@{}{}{}", stem, tag,
                                   attempt == 1 ? "" : fmt::format("-{}", attempt), extension);
    std::filesystem::path candidate = path.parent_path() / name;
    std::error_code error;
    if (!std::filesystem::exists(candidate, error)) return candidate.string();
  }
}

namespace {

// The VM may hold its images (locked for writing) while they are looked at.
storage::ImageAccess shared_access() {
  storage::ImageAccess access;
  access.force_share = true;
  return access;
}

}  // namespace

Result<void> check_checkpoint_format(const std::string& path) {
  auto format = storage::detect_format(path, shared_access());
  if (!format) return fail(format.error());
  if ((*format)->name != "vhd" && (*format)->name != "vhdx") {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} is a {} image; checkpoints need VHD or VHDX disks (differencing "
                            "children): convert it with `lamina disk convert`, or attach it "
                            "readonly",
                            path, (*format)->name));
  }
  return {};
}

Result<std::optional<std::string>> image_parent(const std::string& path) {
  auto format = storage::detect_format(path, shared_access());
  if (!format) return fail(format.error());
  auto info = storage::inspect_image(**format, path, shared_access());
  if (!info) return fail(info.error());
  if (info->backing_chain.empty()) return std::optional<std::string>{};
  return std::optional<std::string>{info->backing_chain.front().path};
}

}  // namespace lamina::mgmt
