#include "vhd_fuzz_input.h"

#include "sparse_fuzz_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "storage/image_format.h"
#include "storage/vhd_check.h"
#include "storage/vhd_image.h"

namespace lamina::storage::test {

namespace {

void exercise(BlockDevice& device) {
  std::vector<std::byte> buffer(64 * 1024);
  uint64_t size = device.size();
  if (size == 0) return;
  // The start, the end and the middle: enough to walk the BAT, bitmaps and parents without
  // reading a 2 TiB disk of zeros.
  for (uint64_t offset : {uint64_t{0}, size / 2 / 512 * 512, size > buffer.size() ? size - buffer.size() : 0}) {
    uint64_t length = std::min<uint64_t>(buffer.size(), size - offset) / 512 * 512;
    if (length == 0) continue;
    (void)device.read(offset, std::span(buffer).first(static_cast<size_t>(length)));
    (void)device.map_extent(offset, size - offset);
  }
}

}  // namespace

void run_vhd_input(std::span<const uint8_t> data, const std::string& folder) {
  std::string path = folder + "/input.vhd";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  // Plain bytes, or a sparse file from the "SPRS" encoding (sparse_fuzz_file.h).
  bool written = write_fuzz_file(fd, data);
  ::close(fd);
  if (!written) return;

  if (auto image = VhdImage::open(path, {.writable = false, .durable = true, .open_parent = true, .access = {}})) {
    exercise(**image);
  }
  (void)vhd_image_format().inspect(path, {});
  (void)check_vhd(path, false);
  (void)check_vhd(path, true);
  if (auto image = VhdImage::open(path, {.writable = true, .durable = false, .open_parent = true, .access = {}})) {
    exercise(**image);
    std::vector<std::byte> sector(512, std::byte{0x5a});
    if ((*image)->size() >= 512) (void)(*image)->write(0, sector);
  }
}

}  // namespace lamina::storage::test
