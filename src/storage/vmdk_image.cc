#include "storage/vmdk_image.h"

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <string_view>
#include <vector>

#include "storage/host_file.h"
#include "storage/read_only_file_device.h"
#include "storage/vmdk_descriptor.h"
#include "storage/vmdk_sparse_extent.h"

namespace lamina::storage {

namespace {

constexpr std::string_view kDescriptorSignature = "# Disk DescriptorFile";

struct OpenExtent {
  uint64_t start = 0;   // bytes into the virtual disk
  uint64_t length = 0;  // bytes
  std::unique_ptr<VmdkSparseExtent> sparse;
  std::unique_ptr<BlockDevice> flat;  // with flat_offset; neither means a ZERO extent
  uint64_t flat_offset = 0;
};

// The extents laid end to end. Owns them; one thread at a time.
class VmdkDevice final : public BlockDevice {
 public:
  VmdkDevice(std::string name, std::vector<OpenExtent> extents, uint64_t size)
      : name_(std::move(name)), extents_(std::move(extents)), size_(size) {}

  uint64_t size() const override { return size_; }
  bool read_only() const override { return true; }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override;
  Result<void> write(uint64_t, std::span<const std::byte>) override { return refuse(); }
  Result<void> flush() override { return {}; }
  Result<void> discard(uint64_t, uint64_t) override { return refuse(); }
  Result<Extent> map_extent(uint64_t offset, uint64_t max_length) override;

 private:
  std::unexpected<Error> refuse() const {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: VMDK images are read-only in Lamina", name_));
  }
  std::string name_;
  std::vector<OpenExtent> extents_;
  uint64_t size_;
};

Result<void> VmdkDevice::read(uint64_t offset, std::span<std::byte> data) {
  if (offset > size_ || data.size() > size_ - offset) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: read at {:#x} of {} bytes passes the end of the disk", name_,
                            offset, data.size()));
  }
  size_t done = 0;
  // The last extent starting at or before offset.
  auto extent = std::ranges::upper_bound(extents_, offset, {}, &OpenExtent::start) - 1;
  while (done < data.size()) {
    uint64_t position = offset + done;
    uint64_t inside = position - extent->start;
    size_t piece =
        static_cast<size_t>(std::min<uint64_t>(extent->length - inside, data.size() - done));
    std::span<std::byte> out = data.subspan(done, piece);
    Result<void> result{};
    if (extent->sparse) {
      result = extent->sparse->read(inside, out);
    } else if (extent->flat) {
      result = extent->flat->read(extent->flat_offset + inside, out);
    } else {
      std::ranges::fill(out, std::byte{0});
    }
    if (!result) return result;
    done += piece;
    ++extent;
  }
  return {};
}

Result<BlockDevice::Extent> VmdkDevice::map_extent(uint64_t offset, uint64_t max_length) {
  auto extent = std::ranges::upper_bound(extents_, offset, {}, &OpenExtent::start) - 1;
  uint64_t inside = offset - extent->start;
  uint64_t length = std::min(max_length, extent->length - inside);
  if (extent->sparse) return extent->sparse->map(inside, length);
  if (extent->flat) {
    uint64_t at = extent->flat_offset + inside;
    // A flat file shorter than its extent: the read reports it.
    if (at >= extent->flat->size()) return Extent{length, false};
    return extent->flat->map_extent(at, std::min(length, extent->flat->size() - at));
  }
  return Extent{length, true};
}

struct Opened {
  std::unique_ptr<VmdkDevice> device;
  VmdkInfo info;
};

Result<void> refuse_parent(const VmdkDescriptor& descriptor, std::string_view name) {
  if (descriptor.has_parent || !descriptor.parent_file_name_hint.empty()) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: VMDK delta disks (parent '{}') are not supported", name,
                            descriptor.parent_file_name_hint));
  }
  return {};
}

Result<Opened> open_monolithic(HostFile file) {
  std::string name = file.name();
  uint64_t file_size = file.size();
  auto sparse = VmdkSparseExtent::open(std::move(file));
  if (!sparse) return fail(sparse.error());
  auto text = (*sparse)->embedded_descriptor();
  if (!text) return fail(text.error());
  VmdkInfo info;
  info.create_type = "monolithicSparse";
  if (!text->empty()) {
    auto descriptor = parse_vmdk_descriptor(*text, name);
    if (!descriptor) return fail(descriptor.error());
    if (auto refused = refuse_parent(*descriptor, name); !refused) return fail(refused.error());
    if (!descriptor->create_type.empty()) info.create_type = descriptor->create_type;
  }
  info.virtual_size = (*sparse)->capacity_bytes();
  info.extent_count = 1;
  info.grain_size = (*sparse)->grain_bytes();
  info.compressed = (*sparse)->compressed();
  info.file_size = file_size;
  std::vector<OpenExtent> extents(1);
  extents[0].length = info.virtual_size;
  extents[0].sparse = std::move(*sparse);
  return Opened{std::make_unique<VmdkDevice>(name, std::move(extents), info.virtual_size), info};
}

Result<Opened> open_from_descriptor(const std::filesystem::path& path, const HostFile& file,
                                    const ImageAccess& access) {
  std::string name = file.name();
  if (file.size() > kMaxVmdkDescriptorBytes) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: descriptor file is larger than 1 MiB", name));
  }
  std::string text(file.size(), '\0');
  if (auto done = file.read_at(0, std::as_writable_bytes(std::span(text)), "descriptor"); !done)
    return fail(done.error());
  auto descriptor = parse_vmdk_descriptor(text, name);
  if (!descriptor) return fail(descriptor.error());
  if (auto refused = refuse_parent(*descriptor, name); !refused) return fail(refused.error());
  if (descriptor->extents.empty())
    return fail(ErrorCode::kCorrupt, fmt::format("{}: descriptor lists no extents", name));

  VmdkInfo info;
  info.create_type = descriptor->create_type;
  info.file_size = file.size();
  std::vector<OpenExtent> extents;
  uint64_t position = 0;
  for (const VmdkExtentLine& line : descriptor->extents) {
    OpenExtent extent;
    extent.start = position;
    extent.length = line.sectors * 512;
    if (extent.length > (1ull << 62) - position)
      return fail(ErrorCode::kCorrupt, fmt::format("{}: extents are too large", name));
    std::filesystem::path extent_path;
    if (line.type != VmdkExtentType::kZero) {
      // The policy keeps extents inside the descriptor's folder (unless allowed), resolved
      // through symlinks: an image must not hand arbitrary host files to a guest.
      auto resolved = resolve_reference(path, line.file, "extent file", access.references);
      if (!resolved) return fail(resolved.error());
      extent_path = *resolved;
      std::error_code ignored;
      if (std::filesystem::equivalent(extent_path, path, ignored)) {
        return fail(ErrorCode::kCorrupt,
                    fmt::format("{}: an extent names the descriptor itself", name));
      }
    }
    if (line.type == VmdkExtentType::kSparse) {
      auto extent_file = HostFile::open(extent_path.string(), HostFile::Mode::kRead,
                                        {.force_share = access.force_share,
                                         .regular_only = true,
                                         .granted = access.references.granted});
      if (!extent_file) return fail(extent_file.error().with_context(name));
      info.file_size += extent_file->size();
      auto sparse = VmdkSparseExtent::open(std::move(*extent_file));
      if (!sparse) return fail(sparse.error().with_context(name));
      if ((*sparse)->capacity_bytes() < extent.length) {
        return fail(ErrorCode::kCorrupt,
                    fmt::format("{}: extent {} holds {} bytes but the descriptor says {}", name,
                                line.file, (*sparse)->capacity_bytes(), extent.length));
      }
      if (info.grain_size == 0) info.grain_size = (*sparse)->grain_bytes();
      info.compressed = info.compressed || (*sparse)->compressed();
      extent.sparse = std::move(*sparse);
    } else if (line.type == VmdkExtentType::kFlat) {
      auto flat = open_read_only_file_device(extent_path, access.force_share,
                                             access.references.granted);
      if (!flat) return fail(flat.error().with_context(name));
      extent.flat_offset = line.offset_sectors * 512;
      uint64_t flat_size = (*flat)->size();
      info.file_size += flat_size;
      if (extent.flat_offset > flat_size || extent.length > flat_size - extent.flat_offset) {
        return fail(
            ErrorCode::kCorrupt,
            fmt::format(
                "{}: flat extent {} is {} bytes, shorter than the descriptor's {} at offset {}",
                name, line.file, flat_size, extent.length, extent.flat_offset));
      }
      extent.flat = std::move(*flat);
    }
    position += extent.length;
    extents.push_back(std::move(extent));
  }
  info.virtual_size = position;
  info.extent_count = static_cast<uint32_t>(extents.size());
  return Opened{std::make_unique<VmdkDevice>(name, std::move(extents), position), info};
}

Result<Opened> open_image(const std::filesystem::path& path, const ImageAccess& access) {
  auto file = HostFile::open(path.string(), HostFile::Mode::kRead,
                             {.force_share = access.force_share,
                              .granted = access.references.granted});
  if (!file) return fail(file.error());
  std::array<std::byte, 64> first{};
  size_t probe = static_cast<size_t>(std::min<uint64_t>(first.size(), file->size()));
  if (auto done = file->read_at(0, std::span(first).first(probe), "header"); !done)
    return fail(done.error());
  std::span<const std::byte> head = std::span(first).first(probe);
  if (looks_like_vmdk_sparse(head)) return open_monolithic(std::move(*file));
  if (probe >= 4 && (std::string_view(reinterpret_cast<const char*>(head.data()), 4) == "COWD")) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: ESX sparse (COWD) VMDK extents are not supported", file->name()));
  }
  if (!looks_like_vmdk(head))
    return fail(ErrorCode::kCorrupt, fmt::format("{}: not a VMDK image", file->name()));
  return open_from_descriptor(path, *file, access);
}

}  // namespace

bool looks_like_vmdk(std::span<const std::byte> first_bytes) {
  if (looks_like_vmdk_sparse(first_bytes)) return true;
  std::string_view text(reinterpret_cast<const char*>(first_bytes.data()), first_bytes.size());
  return text.starts_with(kDescriptorSignature);
}

Result<VmdkInfo> inspect_vmdk(const std::filesystem::path& path, const ImageAccess& access) {
  auto opened = open_image(path, access);
  if (!opened) return fail(opened.error());
  return opened->info;
}

Result<std::unique_ptr<BlockDevice>> open_vmdk(const std::filesystem::path& path, bool read_only,
                                               const ImageAccess& access) {
  if (!read_only) {
    return fail(
        ErrorCode::kUnsupported,
        fmt::format("{}: VMDK images can only be opened read-only (convert to VHDX to write)",
                    path.string()));
  }
  auto opened = open_image(path, access);
  if (!opened) return fail(opened.error());
  return std::unique_ptr<BlockDevice>(std::move(opened->device));
}

}  // namespace lamina::storage
