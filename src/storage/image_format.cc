#include "storage/image_format.h"

#include "storage/qcow2_image.h"
#include "storage/vhdx_image.h"
#include "storage/vmdk_image.h"

#include <algorithm>
#include <fmt/format.h>

#include "storage/host_file.h"

namespace lamina::storage {

std::span<const ImageFormat> image_formats() {
  // One line per format; raw matches anything, so it stays last.
  static const ImageFormat kFormats[] = {
      vhdx_image_format(),
      qcow2_image_format(),
      vmdk_image_format(),
      vhd_image_format(),
      raw_image_format(),
  };
  return kFormats;
}

const ImageFormat* find_format(std::string_view name) {
  for (const ImageFormat& format : image_formats()) {
    if (format.name == name) return &format;
  }
  return nullptr;
}

Result<const ImageFormat*> detect_format(const std::string& path, const ImageAccess& access) {
  auto file = HostFile::open(path, HostFile::Mode::kRead,
                             {.force_share = access.force_share,
                              .granted = access.references.granted});
  if (!file) return fail(file.error());
  uint64_t size = file->size();
  std::vector<std::byte> head(static_cast<size_t>(std::min<uint64_t>(size, kProbeHeadBytes)));
  std::vector<std::byte> tail(static_cast<size_t>(std::min<uint64_t>(size, kProbeTailBytes)));
  if (auto r = file->read_at(0, head); !r) return fail(r.error());
  if (auto r = file->read_at(size - tail.size(), tail); !r) return fail(r.error());
  ProbeBytes bytes{head, tail, size};
  for (const ImageFormat& format : image_formats()) {
    if (format.probe(bytes)) return &format;
  }
  return fail(ErrorCode::kUnsupported, fmt::format("{}: unknown image format", path));
}

Result<std::unique_ptr<BlockDevice>> open_image(const std::string& path, bool writable,
                                                const ImageAccess& access) {
  auto format = detect_format(path, access);
  if (!format) return fail(format.error());
  return guard_allocations(path, [&] { return (*format)->open(path, writable, access); });
}

Result<ImageInfo> inspect_image(const ImageFormat& format, const std::string& path,
                                const ImageAccess& access) {
  if (format.inspect != nullptr) {
    return guard_allocations(path, [&] { return format.inspect(path, access); });
  }
  auto image = guard_allocations(path, [&] { return format.open(path, false, access); });
  if (!image) return fail(image.error());
  auto file = HostFile::open(path, HostFile::Mode::kRead, {.force_share = access.force_share});
  if (!file) return fail(file.error());
  uint64_t size = file->size();
  ImageInfo info;
  info.path = path;
  info.format = std::string(format.name);
  info.virtual_size = (*image)->size();
  info.file_size = size;
  return info;
}

Result<CheckReport> check_image(const ImageFormat& format, const std::string& path, bool repair,
                                const ImageAccess& access) {
  if (repair) {
    // --repair may write, so it needs the image to itself even when it finds nothing to fix.
    // The probe is closed again before the format's checker opens the file its own way.
    auto writer = HostFile::open(path, HostFile::Mode::kReadWrite);
    if (!writer) return fail(writer.error());
  }
  if (format.check != nullptr) {
    return guard_allocations(path, [&] { return format.check(path, repair, access); });
  }
  // Opening is the only structural check there is; an image that opens is reported clean.
  auto image = guard_allocations(path, [&] { return format.open(path, false, access); });
  if (!image) return fail(image.error());
  CheckReport report;
  report.problems.push_back({fmt::format("no structure checker for {} images; it opens", format.name),
                             false, false});
  return report;
}

}  // namespace lamina::storage
