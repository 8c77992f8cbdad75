// The qcow2 row of the format table: probe, open (read-only) and inspect with the backing
// chain. Backing files of any format open through the table; qcow2 ones stay in this reader
// so the depth limit holds across the chain.
#include <fmt/format.h>

#include "storage/image_format.h"
#include "storage/qcow2_image.h"

namespace lamina::storage {

namespace {

bool probe_qcow2(const ProbeBytes& bytes) { return looks_like_qcow2(bytes.head); }

// The format table's name for a qcow2 backing format name ("vpc" is qemu's name for VHD).
std::string_view table_name(std::string_view backing_format) {
  return backing_format == "vpc" ? std::string_view("vhd") : backing_format;
}

// Opens a backing file in the format the image records for it, never a probed one. qcow2
// backing files stay in this reader so the depth limit holds across the chain; VHD, VHDX and
// VMDK chains never lead back to qcow2, so their own limits suffice.
Result<std::unique_ptr<BlockDevice>> open_backing(const std::filesystem::path& path,
                                                  std::string_view format, int depth,
                                                  const ImageAccess& access) {
  if (format == "qcow2") {
    BackingOpener next = [&access](const std::filesystem::path& backing, std::string_view kind,
                                   int level) { return open_backing(backing, kind, level, access); };
    return open_qcow2(path, true, next, depth, access);
  }
  const ImageFormat* named = find_format(table_name(format));
  if (named == nullptr) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("backing file {} has format '{}', which Lamina does not read",
                            path.string(), format));
  }
  // The named format's own open checks that the file is one; nothing is detected.
  return named->open(path.string(), false, access);
}

Result<std::unique_ptr<BlockDevice>> open_entry(const std::string& path, bool writable,
                                                const ImageAccess& access) {
  BackingOpener opener = [&access](const std::filesystem::path& backing, std::string_view kind,
                                   int level) { return open_backing(backing, kind, level, access); };
  return open_qcow2(path, !writable, opener, 0, access);
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

Result<ImageInfo> inspect_entry(const std::string& path, const ImageAccess& access) {
  auto qcow2 = inspect_qcow2(path, access);
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
    if (link.backing_format.empty()) {
      info.warnings.push_back("the backing file's format is not recorded; it is not opened");
      break;
    }
    auto backing = resolve_reference(current, link.backing_file, "backing file", access.references);
    if (!backing) return fail(backing.error());
    if (link.backing_format != "qcow2") {
      const ImageFormat* format = find_format(table_name(link.backing_format));
      if (format == nullptr) {
        info.warnings.push_back(
            fmt::format("backing format '{}' is not one Lamina reads", link.backing_format));
        break;
      }
      auto other = inspect_image(*format, backing->string(), access);
      if (!other) return fail(other.error());
      auto rest = std::move(other->backing_chain);
      other->backing_chain.clear();
      info.backing_chain.push_back(std::move(*other));
      for (auto& parent : rest) info.backing_chain.push_back(std::move(parent));
      break;
    }
    auto next = inspect_qcow2(*backing, access);
    if (!next) return fail(next.error());
    info.backing_chain.push_back(describe(backing->string(), *next));
    current = *backing;
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
