// The qcow2 row of the format table: probe, open (read-only) and inspect with the backing
// chain. Backing files of any format open through the table; qcow2 ones stay in this reader
// so the depth limit holds across the chain.
#include <fmt/format.h>
#include <array>
#include <cstdio>

#include "storage/image_format.h"
#include "storage/qcow2_image.h"

namespace lamina::storage {

namespace {

bool probe_qcow2(const ProbeBytes& bytes) { return looks_like_qcow2(bytes.head); }

// True when the file at path starts with the qcow2 magic (checked here rather than through
// the table so the chain logic does not depend on the table's order).
Result<bool> is_qcow2(const std::filesystem::path& path) {
  auto format = detect_format(path.string());
  if (!format) return fail(format.error());
  if ((*format)->name == "qcow2") return true;
  std::array<std::byte, 4> magic{};
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return false;
  size_t got = std::fread(magic.data(), 1, magic.size(), file);
  std::fclose(file);
  return got == magic.size() && looks_like_qcow2(magic);
}

Result<std::unique_ptr<BlockDevice>> open_backing(const std::filesystem::path& path,
                                                  std::string_view format, int depth) {
  auto qcow2 = is_qcow2(path);
  if (!qcow2) return fail(qcow2.error());
  if (*qcow2 || format == "qcow2") return open_qcow2(path, true, open_backing, depth);
  // Other formats' chains (VHD, VHDX) never lead back to qcow2, so their own limits suffice.
  return open_image(path.string(), false);
}

Result<std::unique_ptr<BlockDevice>> open_entry(const std::string& path, bool writable) {
  return open_qcow2(path, !writable, open_backing);
}

ImageInfo describe(const std::string& path, const Qcow2Info& qcow2) {
  ImageInfo info;
  info.path = path;
  info.format = "qcow2";
  info.virtual_size = qcow2.virtual_size;
  info.file_size = qcow2.file_size;
  info.fields.push_back({"version", uint64_t{qcow2.version}});
  info.fields.push_back({"cluster_size", uint64_t{qcow2.cluster_size}});
  info.fields.push_back({"allocated_bytes", qcow2.allocated_bytes});
  info.fields.push_back({"snapshots", uint64_t{qcow2.snapshot_count}});
  info.fields.push_back({"dirty", qcow2.dirty});
  if (!qcow2.backing_file.empty()) {
    info.fields.push_back({"backing_file", qcow2.backing_file});
    info.fields.push_back({"backing_format", qcow2.backing_format});
  }
  if (qcow2.dirty)
    info.warnings.push_back("dirty bit set: refcounts may be stale (data is readable)");
  return info;
}

Result<ImageInfo> inspect_entry(const std::string& path) {
  auto qcow2 = inspect_qcow2(path);
  if (!qcow2) return fail(qcow2.error());
  ImageInfo info = describe(path, *qcow2);
  // Walk the chain here, iteratively, so a loop of qcow2 files ends at kMaxBackingDepth.
  std::filesystem::path current = path;
  Qcow2Info link = *qcow2;
  for (int depth = 1; !link.backing_file.empty(); ++depth) {
    if (depth > kMaxBackingDepth) {
      info.warnings.push_back(fmt::format("backing chain deeper than {} images", kMaxBackingDepth));
      break;
    }
    std::filesystem::path backing(link.backing_file);
    if (backing.is_relative()) backing = current.parent_path() / backing;
    auto qcow2_backing = is_qcow2(backing);
    if (!qcow2_backing) {
      return fail(qcow2_backing.error().with_context(fmt::format("{}: backing file", path)));
    }
    if (!*qcow2_backing) {
      auto format = detect_format(backing.string());
      if (!format) return fail(format.error());
      auto other = inspect_image(**format, backing.string());
      if (!other) return fail(other.error());
      auto rest = std::move(other->backing_chain);
      other->backing_chain.clear();
      info.backing_chain.push_back(std::move(*other));
      for (auto& parent : rest) info.backing_chain.push_back(std::move(parent));
      break;
    }
    auto next = inspect_qcow2(backing);
    if (!next) return fail(next.error());
    info.backing_chain.push_back(describe(backing.string(), *next));
    current = backing;
    link = *next;
  }
  return info;
}

}  // namespace

ImageFormat qcow2_image_format() {
  // No checker of its own: the generic check opens the image, which validates the L1 table.
  return ImageFormat{"qcow2",     "QEMU copy-on-write v2/v3 (read-only: import with convert)",
                     probe_qcow2, open_entry,
                     nullptr,     inspect_entry,
                     nullptr};
}

}  // namespace lamina::storage
