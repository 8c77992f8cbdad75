#include "virtio/virtio_block_setup.h"

#include <fmt/format.h>
#include <unistd.h>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/image_format.h"

namespace lamina::virtio {

namespace {

// Splits "a,,b,c" into {"a,b", "c"}: a doubled comma is a comma inside a field, as in QEMU's
// option syntax, so paths with commas can be given.
std::vector<std::string> split_fields(std::string_view text) {
  std::vector<std::string> fields(1);
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != ',') {
      fields.back().push_back(text[i]);
    } else if (i + 1 < text.size() && text[i + 1] == ',') {
      fields.back().push_back(',');
      ++i;
    } else {
      fields.emplace_back();
    }
  }
  return fields;
}

}  // namespace

Result<DiskSpec> parse_disk_spec(std::string_view text) {
  DiskSpec disk;
  const std::vector<std::string> fields = split_fields(text);
  disk.path = fields.front();
  if (disk.path.empty()) {
    return fail(
        ErrorCode::kInvalidArgument,
        fmt::format("--disk '{}': the image path is missing (PATH[,readonly][,serial=S])", text));
  }
  bool have_serial = false;
  for (size_t index = 1; index < fields.size(); ++index) {
    const std::string_view option = fields[index];
    if (option == "readonly") {
      disk.read_only = true;
    } else if (option == "bus=virtio" || option == "bus=sata") {
      disk.bus = option == "bus=sata" ? DiskBus::kSata : DiskBus::kVirtio;
    } else if (option == "allow-parent-dir") {
      // The image reference policy (storage/image_reference_policy.h) for its parents.
      disk.references.allow_parent_folder = true;
    } else if (option.starts_with("allow-dir=") && option.size() > 10) {
      disk.references.allowed_folders.emplace_back(std::string(option.substr(10)));
    } else if (option.starts_with("serial=") && !have_serial) {
      if (option.size() == 7) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("--disk '{}': serial= needs a value", text));
      }
      disk.serial = std::string(option.substr(7));
      have_serial = true;
      if (auto valid = check_block_serial(disk.serial); !valid) {
        return fail(valid.error().with_context(fmt::format("--disk '{}'", text)));
      }
    } else {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("--disk '{}': unknown or repeated option '{}' (options are "
                              "readonly, serial=S, bus=virtio|sata, allow-parent-dir and allow-dir=DIR; write a "
                              "comma in the path as ',,')",
                              text, option));
    }
  }
  return disk;
}

namespace {

Result<void> validate_disk(const DiskSpec& disk) {
  std::error_code error;
  const auto status = std::filesystem::status(disk.path, error);
  if (!std::filesystem::exists(status)) {
    return fail(ErrorCode::kNotFound, fmt::format("--disk {}: no such file", disk.path));
  }
  if (!std::filesystem::is_regular_file(status)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--disk {}: not a regular file (give a disk image)", disk.path));
  }
  if (::access(disk.path.c_str(), disk.read_only ? R_OK : R_OK | W_OK) != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--disk {}: {} permission denied{}", disk.path,
                            disk.read_only ? "read" : "read/write",
                            disk.read_only ? "" : " (add ',readonly' to attach it read-only)"));
  }
  auto format = storage::detect_format(disk.path);
  if (!format) return fail(format.error().with_context(fmt::format("--disk {}", disk.path)));
  // Formats without a creator are the ones Lamina reads but does not write (qcow2, VMDK).
  if ((*format)->create == nullptr && !disk.read_only) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("--disk {}: {} images are read-only in Lamina; add ',readonly'",
                            disk.path, (*format)->name));
  }
  return {};
}

}  // namespace

Result<void> validate_disks(std::span<const DiskSpec> disks) {
  for (size_t i = 0; i < disks.size(); ++i) {
    if (auto valid = validate_disk(disks[i]); !valid) return valid;
    for (size_t j = 0; j < i; ++j) {
      std::error_code error;
      if (!std::filesystem::equivalent(disks[i].path, disks[j].path, error)) continue;
      if (!disks[i].read_only || !disks[j].read_only) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("--disk {}: the same image is attached twice; only read-only "
                                "disks may share an image",
                                disks[i].path));
      }
    }
  }
  return {};
}

Result<OpenedDisk> open_disk(const DiskSpec& disk) {
  storage::ImageAccess access;
  access.references = disk.references;
  auto image = storage::open_image(disk.path, !disk.read_only, access);
  if (!image) return fail(image.error().with_context(fmt::format("--disk {}", disk.path)));
  OpenedDisk opened;
  opened.image = std::make_shared<storage::TrackedBlockDevice>(std::move(*image));
  opened.serial = disk.serial.empty() ? derive_block_serial(disk.path) : disk.serial;
  return opened;
}

Result<std::unique_ptr<VirtioBlock>> make_virtio_block(const OpenedDisk& disk) {
  return VirtioBlock::create(disk.image, disk.serial);
}

}  // namespace lamina::virtio
