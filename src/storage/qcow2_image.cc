#include "storage/qcow2_image.h"

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "base/byte_order.h"
#include "storage/host_file.h"
#include "storage/inflate.h"
#include "storage/read_only_file_device.h"

namespace lamina::storage {

namespace {

constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
constexpr uint32_t kMinClusterBits = 9;
constexpr uint32_t kMaxClusterBits = 21;
// qemu's own limits; beyond them no qcow2 writer produces images (qcow2.h QCOW_MAX_L1_SIZE).
constexpr uint64_t kMaxL1Bytes = 32u << 20;
constexpr uint64_t kMaxVirtualSize = 1ull << 61;
constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55 of L1 and L2 entries
constexpr uint64_t kCompressedFlag = 1ull << 62;
constexpr uint64_t kZeroFlag = 1ull;  // v3 standard cluster: reads as zeros
constexpr uint64_t kL2CacheBytes = 16u << 20;

// Incompatible feature bits (qcow2 spec, header bytes 72-79).
constexpr uint64_t kDirtyBit = 1ull << 0;
constexpr uint64_t kCorruptBit = 1ull << 1;
constexpr uint64_t kExternalDataBit = 1ull << 2;
constexpr uint64_t kCompressionTypeBit = 1ull << 3;
constexpr uint64_t kExtendedL2Bit = 1ull << 4;

// Header extension types (qcow2 spec, "Header extensions").
constexpr uint32_t kExtensionEnd = 0;
constexpr uint32_t kExtensionBackingFormat = 0xe2792aca;
constexpr uint32_t kExtensionExternalDataFile = 0x44415441;
constexpr uint32_t kExtensionFeatureNames = 0x6803f857;

struct Header {
  uint32_t version = 0;
  uint32_t cluster_bits = 0;
  uint64_t cluster_size = 0;
  uint64_t virtual_size = 0;
  uint64_t l1_offset = 0;
  uint32_t l1_size = 0;
  uint32_t snapshot_count = 0;
  uint64_t incompatible = 0;
  std::string backing_file;
  std::string backing_format;
};

std::unexpected<Error> corrupt(const HostFile& file, std::string_view what) {
  return fail(ErrorCode::kCorrupt, fmt::format("{}: {}", file.name(), what));
}

Result<Header> parse_header(const HostFile& file) {
  std::array<std::byte, 112> raw{};
  if (file.size() < 72) return corrupt(file, "file is too small for a qcow2 header");
  size_t header_read = std::min<uint64_t>(raw.size(), file.size());
  if (auto done = file.read_at(0, std::span(raw).first(header_read), "qcow2 header"); !done) {
    return fail(done.error());
  }
  if (load_be<uint32_t>(&raw[0]) != kMagic) return corrupt(file, "not a qcow2 image (bad magic)");
  Header header;
  header.version = load_be<uint32_t>(&raw[4]);
  if (header.version != 2 && header.version != 3) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: qcow2 version {} is not supported (2 and 3 are)", file.name(),
                            header.version));
  }
  uint64_t backing_offset = load_be<uint64_t>(&raw[8]);
  uint32_t backing_size = load_be<uint32_t>(&raw[16]);
  header.cluster_bits = load_be<uint32_t>(&raw[20]);
  header.virtual_size = load_be<uint64_t>(&raw[24]);
  uint32_t crypt_method = load_be<uint32_t>(&raw[32]);
  header.l1_size = load_be<uint32_t>(&raw[36]);
  header.l1_offset = load_be<uint64_t>(&raw[40]);
  header.snapshot_count = load_be<uint32_t>(&raw[60]);

  if (header.cluster_bits < kMinClusterBits || header.cluster_bits > kMaxClusterBits) {
    return corrupt(file, fmt::format("cluster_bits {} is outside 9..21", header.cluster_bits));
  }
  header.cluster_size = 1ull << header.cluster_bits;
  if (crypt_method != 0) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: encrypted qcow2 images (method {}) are not supported; decrypt it "
                            "first with qemu-img convert",
                            file.name(), crypt_method));
  }
  if (header.virtual_size > kMaxVirtualSize) {
    return corrupt(
        file, fmt::format("virtual size {} is beyond the format's limit", header.virtual_size));
  }

  uint32_t header_length = 72;
  if (header.version == 3) {
    if (header_read < 104) return corrupt(file, "file is too small for a version 3 header");
    header.incompatible = load_be<uint64_t>(&raw[72]);
    header_length = load_be<uint32_t>(&raw[100]);
    if (header_length < 104 || header_length > header.cluster_size) {
      return corrupt(file,
                     fmt::format("header length {} is outside 104..cluster size", header_length));
    }
    uint8_t compression_type =
        header_length > 104 && header_read > 104 ? static_cast<uint8_t>(raw[104]) : 0;
    if ((header.incompatible & kCompressionTypeBit) && compression_type != 0) {
      return fail(ErrorCode::kUnsupported,
                  fmt::format("{}: compression type {} (zstd) is not supported, only deflate",
                              file.name(), compression_type));
    }
  }
  if (header.incompatible & kExternalDataBit) {
    return fail(
        ErrorCode::kUnsupported,
        fmt::format("{}: qcow2 images with an external data file are not supported", file.name()));
  }
  if (header.incompatible & kExtendedL2Bit) {
    return fail(
        ErrorCode::kUnsupported,
        fmt::format("{}: qcow2 extended L2 entries (subclusters) are not supported", file.name()));
  }
  uint64_t unknown = header.incompatible & ~(kDirtyBit | kCorruptBit | kCompressionTypeBit |
                                             kExternalDataBit | kExtendedL2Bit);
  std::string unknown_names;

  // Header extensions follow the header, within the first cluster.
  uint64_t position = header_length;
  uint64_t extension_end = std::min<uint64_t>(header.cluster_size, file.size());
  while (position + 8 <= extension_end) {
    std::array<std::byte, 8> extension{};
    if (auto done = file.read_at(position, extension, "qcow2 header extension"); !done)
      return fail(done.error());
    uint32_t type = load_be<uint32_t>(&extension[0]);
    uint32_t length = load_be<uint32_t>(&extension[4]);
    if (type == kExtensionEnd) break;
    if (length > extension_end - position - 8) {
      return corrupt(file, fmt::format("header extension {:#x} runs past the first cluster", type));
    }
    if (type == kExtensionBackingFormat && length <= 64) {
      std::string name(length, '\0');
      if (auto done =
              file.read_at(position + 8, std::as_writable_bytes(std::span(name)), "backing format");
          !done) {
        return fail(done.error());
      }
      header.backing_format = std::move(name);
    } else if (type == kExtensionFeatureNames && unknown != 0 && length <= 48 * 64) {
      // Entries of 48 bytes: type (0 = incompatible), bit number, NUL-padded name.
      std::vector<std::byte> table(length);
      if (auto done = file.read_at(position + 8, table, "feature name table"); !done) {
        return fail(done.error());
      }
      for (size_t entry = 0; entry + 48 <= table.size(); entry += 48) {
        auto bit = static_cast<uint8_t>(table[entry + 1]);
        if (table[entry] != std::byte{0} || bit >= 64 || !(unknown & (1ull << bit))) continue;
        std::string name(reinterpret_cast<const char*>(&table[entry + 2]), 46);
        name.resize(name.find('\0') == std::string::npos ? name.size() : name.find('\0'));
        unknown_names += fmt::format(" '{}' (bit {})", name, bit);
      }
    } else if (type == kExtensionExternalDataFile) {
      return fail(ErrorCode::kUnsupported,
                  fmt::format("{}: qcow2 images with an external data file are not supported",
                              file.name()));
    }
    position += 8 + ((static_cast<uint64_t>(length) + 7) & ~7ull);
  }
  if (unknown != 0) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: unknown incompatible qcow2 features {:#x}{}; refusing to read it",
                            file.name(), unknown, unknown_names));
  }

  if (backing_offset != 0) {
    // qemu caps backing file names at 1023 bytes (qcow2.c, "Backing file name too long").
    if (backing_size == 0 || backing_size > 1023 || !file.contains(backing_offset, backing_size)) {
      return corrupt(file, fmt::format("backing file name at {:#x} ({} bytes) is invalid",
                                       backing_offset, backing_size));
    }
    header.backing_file.assign(backing_size, '\0');
    if (auto done =
            file.read_at(backing_offset, std::as_writable_bytes(std::span(header.backing_file)),
                         "backing file name");
        !done) {
      return fail(done.error());
    }
  }
  return header;
}

// The L2 entry of a guest cluster, bounded and validated; 0 when unallocated.
class Qcow2Device final : public BlockDevice {
 public:
  Qcow2Device(HostFile file, Header header, std::vector<uint64_t> l1,
              std::unique_ptr<BlockDevice> backing)
      : file_(std::move(file)),
        header_(std::move(header)),
        l1_(std::move(l1)),
        backing_(std::move(backing)),
        l2_entries_(header_.cluster_size / 8) {}

  uint64_t size() const override { return header_.virtual_size; }
  bool read_only() const override { return true; }

  Result<void> read(uint64_t offset, std::span<std::byte> data) override;
  Result<void> write(uint64_t, std::span<const std::byte>) override { return refuse(); }
  Result<void> flush() override { return {}; }
  Result<void> discard(uint64_t, uint64_t) override { return refuse(); }

  // Validates every L1 entry (done once at open).
  Result<void> check_l1() const;
  Result<uint64_t> count_allocated();

 private:
  std::unexpected<Error> refuse() const {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: qcow2 images are read-only in Lamina", file_.name()));
  }
  Result<uint64_t> l2_entry(uint64_t cluster_index);
  Result<const std::vector<uint64_t>*> l2_table(uint64_t l2_offset);
  bool overlaps_metadata(uint64_t offset, uint64_t length) const;
  Result<void> read_cluster_piece(uint64_t cluster_index, uint64_t in_cluster,
                                  std::span<std::byte> out);
  Result<void> read_compressed(uint64_t entry, uint64_t in_cluster, std::span<std::byte> out);
  Result<void> read_backing(uint64_t offset, std::span<std::byte> out);

  HostFile file_;
  Header header_;
  std::vector<uint64_t> l1_;
  std::unique_ptr<BlockDevice> backing_;
  uint64_t l2_entries_;
  std::unordered_map<uint64_t, std::vector<uint64_t>> l2_cache_;
  std::vector<std::byte> compressed_input_;
  std::vector<std::byte> inflated_;
  uint64_t inflated_entry_ = 0;  // the compressed descriptor whose cluster is in inflated_
};

bool Qcow2Device::overlaps_metadata(uint64_t offset, uint64_t length) const {
  auto overlaps = [&](uint64_t start, uint64_t size) {
    return offset < start + size && start < offset + length;
  };
  return overlaps(0, header_.cluster_size) ||
         overlaps(header_.l1_offset, uint64_t{header_.l1_size} * 8);
}

Result<void> Qcow2Device::check_l1() const {
  for (size_t index = 0; index < l1_.size(); ++index) {
    uint64_t l2_offset = l1_[index] & kOffsetMask;
    if (l2_offset == 0) continue;
    if ((l2_offset & (header_.cluster_size - 1)) != 0 ||
        !file_.contains(l2_offset, header_.cluster_size) ||
        overlaps_metadata(l2_offset, header_.cluster_size)) {
      return corrupt(file_, fmt::format("L1 entry {} points at an invalid L2 table offset {:#x} "
                                        "(unaligned, outside the file or over the header/L1 table)",
                                        index, l2_offset));
    }
  }
  return {};
}

Result<const std::vector<uint64_t>*> Qcow2Device::l2_table(uint64_t l2_offset) {
  if (auto found = l2_cache_.find(l2_offset); found != l2_cache_.end()) return &found->second;
  // A bounded cache: dropping everything when full keeps memory fixed whatever the image says.
  if ((l2_cache_.size() + 1) * header_.cluster_size > kL2CacheBytes) l2_cache_.clear();
  std::vector<std::byte> raw(header_.cluster_size);
  if (auto done = file_.read_at(l2_offset, raw, "L2 table"); !done) return fail(done.error());
  std::vector<uint64_t> table(l2_entries_);
  for (uint64_t index = 0; index < l2_entries_; ++index)
    table[index] = load_be<uint64_t>(&raw[index * 8]);
  return &l2_cache_.emplace(l2_offset, std::move(table)).first->second;
}

Result<uint64_t> Qcow2Device::l2_entry(uint64_t cluster_index) {
  uint64_t l1_index = cluster_index / l2_entries_;
  if (l1_index >= l1_.size()) return 0;
  uint64_t l2_offset = l1_[l1_index] & kOffsetMask;
  if (l2_offset == 0) return 0;
  auto table = l2_table(l2_offset);
  if (!table) return fail(table.error());
  return (**table)[cluster_index % l2_entries_];
}

Result<void> Qcow2Device::read_backing(uint64_t offset, std::span<std::byte> out) {
  std::ranges::fill(out, std::byte{0});
  if (!backing_ || offset >= backing_->size()) return {};
  uint64_t available = std::min<uint64_t>(out.size(), backing_->size() - offset);
  return backing_->read(offset, out.first(available));
}

Result<void> Qcow2Device::read_compressed(uint64_t entry, uint64_t in_cluster,
                                          std::span<std::byte> out) {
  // qcow2 spec, "Compressed Clusters Descriptor": x = 62 - (cluster_bits - 8).
  uint32_t shift = 62 - (header_.cluster_bits - 8);
  uint64_t host_offset = entry & ((1ull << shift) - 1);
  uint64_t sectors = ((entry & ~kCompressedFlag) >> shift) + 1;
  uint64_t length = sectors * 512 - (host_offset & 511);
  if (host_offset >= file_.size() || overlaps_metadata(host_offset, 1)) {
    return corrupt(file_,
                   fmt::format("compressed cluster at {:#x} lies outside the file or over metadata",
                               host_offset));
  }
  // The last compressed cluster may end before its last sector does.
  length = std::min(length, file_.size() - host_offset);
  if (inflated_.empty() || inflated_entry_ != entry) {
    compressed_input_.resize(length);
    if (auto done = file_.read_at(host_offset, compressed_input_, "compressed cluster"); !done)
      return done;
    inflated_.resize(header_.cluster_size);
    inflated_entry_ = 0;
    auto produced = inflate_into(compressed_input_, inflated_, InflateFormat::kRawDeflate);
    if (!produced || *produced != header_.cluster_size) {
      return corrupt(
          file_, fmt::format("compressed cluster at {:#x} does not inflate to a whole cluster{}",
                             host_offset, produced ? "" : ": " + produced.error().message()));
    }
    inflated_entry_ = entry;
  }
  std::memcpy(out.data(), inflated_.data() + in_cluster, out.size());
  return {};
}

Result<void> Qcow2Device::read_cluster_piece(uint64_t cluster_index, uint64_t in_cluster,
                                             std::span<std::byte> out) {
  auto entry = l2_entry(cluster_index);
  if (!entry) return fail(entry.error());
  uint64_t guest_offset = (cluster_index << header_.cluster_bits) + in_cluster;
  if (*entry & kCompressedFlag) return read_compressed(*entry, in_cluster, out);
  if (header_.version >= 3 && (*entry & kZeroFlag)) {
    std::ranges::fill(out, std::byte{0});
    return {};
  }
  uint64_t host = *entry & kOffsetMask;
  if (host == 0) return read_backing(guest_offset, out);
  if ((host & (header_.cluster_size - 1)) != 0 || !file_.contains(host, header_.cluster_size) ||
      overlaps_metadata(host, header_.cluster_size)) {
    return corrupt(
        file_, fmt::format("guest cluster {} maps to invalid host offset {:#x} (unaligned, outside "
                           "the file or over the header/L1 table)",
                           cluster_index, host));
  }
  return file_.read_at(host + in_cluster, out, "data cluster");
}

Result<void> Qcow2Device::read(uint64_t offset, std::span<std::byte> data) {
  if (offset > size() || data.size() > size() - offset) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{}: read at {:#x} of {} bytes passes the end of the disk",
                            file_.name(), offset, data.size()));
  }
  size_t done = 0;
  while (done < data.size()) {
    uint64_t position = offset + done;
    uint64_t in_cluster = position & (header_.cluster_size - 1);
    size_t piece = static_cast<size_t>(
        std::min<uint64_t>(header_.cluster_size - in_cluster, data.size() - done));
    if (auto result = read_cluster_piece(position >> header_.cluster_bits, in_cluster,
                                         data.subspan(done, piece));
        !result) {
      return result;
    }
    done += piece;
  }
  return {};
}

Result<uint64_t> Qcow2Device::count_allocated() {
  uint64_t total = 0;
  uint32_t shift = 62 - (header_.cluster_bits - 8);
  for (uint64_t l1_entry : l1_) {
    uint64_t l2_offset = l1_entry & kOffsetMask;
    if (l2_offset == 0) continue;
    auto table = l2_table(l2_offset);
    if (!table) return fail(table.error());
    for (uint64_t entry : **table) {
      if (entry & kCompressedFlag) {
        total += (((entry & ~kCompressedFlag) >> shift) + 1) * 512;
      } else if ((entry & kOffsetMask) != 0) {
        total += header_.cluster_size;
      }
    }
  }
  return total;
}

Result<std::unique_ptr<BlockDevice>> default_backing_opener(const std::filesystem::path& path,
                                                            std::string_view format, int depth,
                                                            const ImageAccess& access) {
  if (format == "qcow2") return open_qcow2(path, true, {}, depth, access);
  if (format == "raw") return open_read_only_file_device(path, access.force_share, access.references.granted);
  return fail(
      ErrorCode::kUnsupported,
      fmt::format("backing file {} has format '{}', which the qcow2 reader cannot open by itself",
                  path.string(), format));
}

// Where the backing file is, under the reference policy; its format must be recorded, since
// probing a file the image names would let it choose how a host file is read.
Result<std::filesystem::path> resolve_qcow2_backing(const std::filesystem::path& path,
                                                    const Header& header,
                                                    const ReferencePolicy& policy) {
  if (header.backing_format.empty()) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: the backing file's format is not recorded in the image and "
                            "Lamina does not guess it; record it with 'qemu-img rebase -u -b "
                            "NAME -F qcow2|raw {}'",
                            path.filename().string(), path.filename().string()));
  }
  return resolve_reference(path, header.backing_file, "backing file", policy);
}

struct OpenedImage {
  std::unique_ptr<Qcow2Device> device;
  Header header;
  uint64_t file_size = 0;
};

Result<OpenedImage> open_image(const std::filesystem::path& path, const BackingOpener& open_backing,
                               int depth, bool with_backing, const ImageAccess& access) {
  if (depth > kMaxBackingDepth) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: backing chain is deeper than {} images (a loop?)", path.string(),
                            kMaxBackingDepth));
  }
  // A backing file (depth > 0) is a file the image names: regular files only.
  auto file = HostFile::open(path.string(), HostFile::Mode::kRead,
                             {.force_share = access.force_share,
                              .regular_only = depth > 0,
                              .granted = access.references.granted});
  if (!file) return fail(file.error());
  auto header = parse_header(*file);
  if (!header) return fail(header.error());

  uint64_t l2_entries = header->cluster_size / 8;
  uint64_t clusters = (header->virtual_size + header->cluster_size - 1) >> header->cluster_bits;
  uint64_t l1_needed = (clusters + l2_entries - 1) / l2_entries;
  uint64_t l1_bytes = uint64_t{header->l1_size} * 8;
  if (header->l1_size < l1_needed) {
    return corrupt(*file, fmt::format("L1 table has {} entries but the virtual size needs {}",
                                      header->l1_size, l1_needed));
  }
  if (l1_bytes > kMaxL1Bytes)
    return corrupt(*file, fmt::format("L1 table of {} entries is too large", header->l1_size));
  if ((header->l1_offset & (header->cluster_size - 1)) != 0 ||
      (l1_bytes != 0 && header->l1_offset == 0) || !file->contains(header->l1_offset, l1_bytes)) {
    return corrupt(*file, fmt::format("L1 table offset {:#x} is unaligned or outside the file",
                                      header->l1_offset));
  }
  std::vector<std::byte> raw(l1_bytes);
  if (auto done = file->read_at(header->l1_offset, raw, "L1 table"); !done)
    return fail(done.error());
  // Entries past the virtual size are never used; keep only those that are.
  std::vector<uint64_t> l1(l1_needed);
  for (uint64_t index = 0; index < l1_needed; ++index)
    l1[index] = load_be<uint64_t>(&raw[index * 8]);

  std::unique_ptr<BlockDevice> backing;
  if (with_backing && !header->backing_file.empty()) {
    auto backing_path = resolve_qcow2_backing(path, *header, access.references);
    if (!backing_path) return fail(backing_path.error());
    auto opened =
        open_backing
            ? open_backing(*backing_path, header->backing_format, depth + 1)
            : default_backing_opener(*backing_path, header->backing_format, depth + 1, access);
    if (!opened)
      return fail(opened.error().with_context(fmt::format("{}: backing file", file->name())));
    backing = std::move(*opened);
  }
  uint64_t file_size = file->size();
  Header kept = *header;
  auto device = std::make_unique<Qcow2Device>(std::move(*file), std::move(*header), std::move(l1),
                                              std::move(backing));
  if (auto checked = device->check_l1(); !checked) return fail(checked.error());
  return OpenedImage{std::move(device), std::move(kept), file_size};
}

}  // namespace

bool looks_like_qcow2(std::span<const std::byte> first_bytes) {
  return first_bytes.size() >= 4 && load_be<uint32_t>(first_bytes.data()) == kMagic;
}

Result<Qcow2Info> inspect_qcow2(const std::filesystem::path& path, const ImageAccess& access) {
  auto image = open_image(path, {}, 0, false, access);
  if (!image) return fail(image.error());
  auto allocated = image->device->count_allocated();
  if (!allocated) return fail(allocated.error());
  Qcow2Info info;
  info.version = image->header.version;
  info.virtual_size = image->header.virtual_size;
  info.cluster_size = static_cast<uint32_t>(image->header.cluster_size);
  info.file_size = image->file_size;
  info.allocated_bytes = *allocated;
  info.snapshot_count = image->header.snapshot_count;
  info.dirty = (image->header.incompatible & kDirtyBit) != 0;
  info.backing_file = image->header.backing_file;
  info.backing_format = image->header.backing_format;
  return info;
}

Result<std::unique_ptr<BlockDevice>> open_qcow2(const std::filesystem::path& path, bool read_only,
                                                const BackingOpener& open_backing, int depth,
                                                const ImageAccess& access) {
  if (!read_only) {
    return fail(
        ErrorCode::kUnsupported,
        fmt::format("{}: qcow2 images can only be opened read-only (convert to VHDX to write)",
                    path.string()));
  }
  auto image = open_image(path, open_backing, depth, true, access);
  if (!image) return fail(image.error());
  return std::unique_ptr<BlockDevice>(std::move(image->device));
}

}  // namespace lamina::storage
