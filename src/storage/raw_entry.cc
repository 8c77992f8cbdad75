// The raw row of the format table: any file is a raw disk, so raw's probe matches everything
// and the table keeps it last.

#include <fmt/format.h>

#include "storage/image_format.h"
#include "storage/raw_image.h"

namespace lamina::storage {

namespace {

bool probe_raw(const ProbeBytes&) { return true; }

Result<std::unique_ptr<BlockDevice>> open_raw(const std::string& path, bool writable,
                                              const ImageAccess& access) {
  auto image = RawImage::open(path, writable, access.force_share, access.references.granted);
  if (!image) return fail(image.error());
  return std::unique_ptr<BlockDevice>(std::move(*image));
}

Result<std::unique_ptr<BlockDevice>> create_raw(const std::string& path,
                                                const CreateOptions& options) {
  if (!options.type.empty()) {
    return fail(ErrorCode::kInvalidArgument, "raw images have no --type");
  }
  if (options.azure) return fail(ErrorCode::kInvalidArgument, "--azure needs --format vhd");
  if (options.block_size != 0) {
    return fail(ErrorCode::kInvalidArgument, "raw images have no --block-size");
  }
  if (options.size == 0) return fail(ErrorCode::kInvalidArgument, "size must be more than 0");
  auto file = HostFile::open(path, HostFile::Mode::kCreateExclusive);
  if (!file) return fail(file.error());
  auto image = RawImage::create(std::move(*file), options.size);
  if (!image) return fail(image.error());
  return std::unique_ptr<BlockDevice>(std::move(*image));
}

Result<ImageInfo> inspect_raw(const std::string& path, const ImageAccess& access) {
  auto image = RawImage::open(path, false, access.force_share);
  if (!image) return fail(image.error());
  ImageInfo info;
  info.path = path;
  info.format = "raw";
  info.virtual_size = (*image)->size();
  info.file_size = (*image)->size();
  return info;
}

Result<CheckReport> check_raw(const std::string& path, bool, const ImageAccess& access) {
  auto image = RawImage::open(path, false, access.force_share);
  if (!image) return fail(image.error());
  CheckReport report;
  if ((*image)->size() % 512 != 0) {
    report.problems.push_back(
        {fmt::format("size {} is not a whole number of 512-byte sectors", (*image)->size()),
         false, false});
  }
  return report;
}

}  // namespace

ImageFormat raw_image_format() {
  return ImageFormat{"raw", "raw disk image (the file's bytes are the disk)", probe_raw,
                     open_raw, create_raw, inspect_raw, check_raw};
}

}  // namespace lamina::storage
