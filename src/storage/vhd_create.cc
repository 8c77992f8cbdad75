#include "storage/vhd_create.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "storage/vhd_image.h"
#include "storage/vhd_layout.h"

namespace lamina::storage::vhd {

namespace {

std::string to_windows(std::string path) {
  for (char& c : path) {
    if (c == '/') c = '\\';
  }
  return path;
}

}  // namespace

Result<void> validate_create(const CreateSpec& spec) {
  if (spec.size == 0) return fail(ErrorCode::kInvalidArgument, "size must be more than 0");
  if (spec.size % 512 != 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("size {} is not a multiple of 512 bytes", spec.size));
  }
  if (spec.size > kMaxVirtualSize) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("size {} is over the VHD maximum of 2040 GiB", spec.size));
  }
  if (spec.type != DiskType::kFixed &&
      (spec.block_size < kMinBlockSize || spec.block_size > kMaxBlockSize ||
       (spec.block_size & (spec.block_size - 1)) != 0)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("block size {} is not a power of two between 512 bytes and 256 MiB",
                            spec.block_size));
  }
  if (spec.type != DiskType::kFixed && (spec.size + spec.block_size - 1) / spec.block_size > kMaxBatEntries) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("block size {} is too small for {} bytes (more than {} blocks)",
                            spec.block_size, spec.size, kMaxBatEntries));
  }
  if ((spec.type == DiskType::kDifferencing) != spec.parent.has_value()) {
    return fail(ErrorCode::kInternal, "a differencing disk needs a parent, and only it");
  }
  return {};
}

Result<ParentLink> link_to_parent(const std::string& parent_path) {
  auto parent = VhdImage::open(parent_path, {.writable = false, .durable = true, .open_parent = true, .access = {}});
  if (!parent) return fail(parent.error());
  struct stat info {};
  if (::stat(parent_path.c_str(), &info) != 0) return fail(io_error(parent_path, "stat"));
  ParentLink link;
  link.path = parent_path;
  link.unique_id = (*parent)->footer().unique_id;
  int64_t modified = static_cast<int64_t>(info.st_mtime);
  link.time_stamp = modified > kVhdEpoch ? static_cast<uint32_t>(modified - kVhdEpoch) : 0;
  return link;
}

Result<void> write_new_image(HostFile& file, const CreateSpec& spec) {
  if (auto valid = validate_create(spec); !valid) return valid;
  Footer footer;
  footer.time_stamp = vhd_time_now();
  footer.creator_application = kCreatorApplication;
  footer.creator_version = kCreatorVersion;
  footer.creator_host_os = kCreatorHostWindows;
  footer.original_size = spec.size;
  footer.current_size = spec.size;
  footer.geometry = geometry_for_size(spec.size);
  footer.disk_type = spec.type;
  footer.unique_id = spec.unique_id.value_or(random_uuid());

  if (spec.type == DiskType::kFixed) {
    // Spec: a fixed disk is the data followed by the footer; the data is sparse zeros here.
    if (auto r = file.truncate(spec.size); !r) return r;
    return file.write_at(spec.size, serialize_footer(footer));
  }

  footer.data_offset = kFooterSize;
  DynamicHeader header;
  header.block_size = spec.block_size;
  header.max_table_entries =
      static_cast<uint32_t>((spec.size + spec.block_size - 1) / spec.block_size);
  // Parent locator data goes between the header and the BAT: qemu 7.2 places new blocks right
  // after the BAT without looking at locators, and would overwrite locator data placed there.
  uint64_t end = kFooterSize + kDynamicHeaderSize;

  std::vector<std::pair<uint64_t, std::string>> locator_data;
  if (spec.parent) {
    namespace fs = std::filesystem;
    std::error_code ignored;
    fs::path parent_absolute = fs::absolute(spec.parent->path, ignored).lexically_normal();
    fs::path child_folder = fs::absolute(file.path(), ignored).lexically_normal().parent_path();
    std::string relative = parent_absolute.lexically_relative(child_folder).string();
    if (relative.empty()) relative = parent_absolute.string();
    if (relative.rfind("..", 0) != 0 && relative.front() != '/') relative = "./" + relative;
    header.parent_unique_id = spec.parent->unique_id;
    header.parent_time_stamp = spec.parent->time_stamp;
    header.parent_unicode_name = utf8_to_utf16(parent_absolute.filename().string());
    // Hyper-V writes both: W2ru (relative to the child) and W2ku (absolute), UTF-16LE.
    const std::pair<uint32_t, std::string> paths[] = {
        {kPlatformW2ru, to_windows(relative)}, {kPlatformW2ku, to_windows(parent_absolute.string())}};
    size_t index = 0;
    for (const auto& [code, path] : paths) {
      std::string bytes = encode_utf16le(utf8_to_utf16(path));
      ParentLocator& locator = header.parent_locators[index++];
      locator.platform_code = code;
      locator.data_length = static_cast<uint32_t>(bytes.size());
      // Bytes, not sectors: what Hyper-V and VirtualBox store despite the spec's wording.
      locator.data_space = static_cast<uint32_t>((bytes.size() + 511) / 512 * 512);
      locator.data_offset = end;
      locator_data.emplace_back(end, std::move(bytes));
      end += locator.data_space;
    }
  }
  header.table_offset = end;
  end += bat_bytes(header.max_table_entries);

  std::vector<std::byte> table(bat_bytes(header.max_table_entries), std::byte{0xff});
  auto footer_bytes = serialize_footer(footer);
  if (auto r = file.write_at(0, footer_bytes); !r) return r;
  if (auto r = file.write_at(kFooterSize, serialize_dynamic_header(header)); !r) return r;
  if (auto r = file.write_at(header.table_offset, table); !r) return r;
  for (const auto& [offset, bytes] : locator_data) {
    std::vector<std::byte> padded((bytes.size() + 511) / 512 * 512, std::byte{0});
    std::memcpy(padded.data(), bytes.data(), bytes.size());
    if (auto r = file.write_at(offset, padded); !r) return r;
  }
  return file.write_at(end, footer_bytes);
}

}  // namespace lamina::storage::vhd
