// The VMDK row of the format table: probe, open (read-only) and inspect.
#include "storage/image_format.h"
#include "storage/vmdk_image.h"

namespace lamina::storage {

namespace {

bool probe_vmdk(const ProbeBytes& bytes) { return looks_like_vmdk(bytes.head); }

Result<std::unique_ptr<BlockDevice>> open_entry(const std::string& path, bool writable,
                                                const ImageAccess& access) {
  return open_vmdk(path, !writable, access);
}

Result<ImageInfo> inspect_entry(const std::string& path, const ImageAccess& access) {
  auto vmdk = inspect_vmdk(path, access);
  if (!vmdk) return fail(vmdk.error());
  ImageInfo info;
  info.path = path;
  info.format = "vmdk";
  info.virtual_size = vmdk->virtual_size;
  info.file_size = vmdk->file_size;
  info.fields.push_back({"create_type", vmdk->create_type});
  info.fields.push_back({"extents", uint64_t{vmdk->extent_count}});
  if (vmdk->grain_size != 0) info.fields.push_back({"grain_size", vmdk->grain_size});
  info.fields.push_back({"compressed", vmdk->compressed});
  return info;
}

}  // namespace

ImageFormat vmdk_image_format() {
  // No checker of its own: the generic check opens the image, which validates the headers and
  // grain directories.
  return ImageFormat{"vmdk",     "VMware virtual disk (sparse, stream-optimized, flat; read-only)",
                     probe_vmdk, open_entry,
                     nullptr,    inspect_entry,
                     nullptr};
}

}  // namespace lamina::storage
