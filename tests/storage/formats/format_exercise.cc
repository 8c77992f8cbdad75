#include "format_exercise.h"

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "storage/qcow2_image.h"
#include "storage/vhdx_image.h"
#include "storage/vmdk_image.h"

namespace lamina::storage::testing {

namespace {

// Reads the start, the end and a few random places: bounded work whatever size the header claims.
void read_sample(BlockDevice& device, uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::vector<std::byte> buffer(64 * 1024);
  uint64_t size = device.size();
  auto read_at = [&](uint64_t offset, uint64_t length) {
    if (offset >= size) return;
    length = std::min({length, size - offset, uint64_t{buffer.size()}});
    (void)device.read(offset, std::span(buffer).first(static_cast<size_t>(length)));
  };
  for (uint64_t offset = 0; offset < 256 * 1024; offset += buffer.size())
    read_at(offset, buffer.size());
  if (size > buffer.size()) read_at(size - buffer.size(), buffer.size());
  for (int index = 0; index < 8; ++index)
    read_at(generator() % (size + 1) / 512 * 512, 4096 + generator() % 8192);
  (void)device.write(0, std::span(buffer).first(512));  // must be refused (read-only)
}

}  // namespace

bool exercise_image(const std::filesystem::path& path, ImageFormat format, uint64_t seed) {
  Result<std::unique_ptr<BlockDevice>> device = fail(ErrorCode::kInternal, "not opened");
  switch (format) {
    case ImageFormat::kQcow2:
      (void)inspect_qcow2(path);
      device = open_qcow2(path);
      break;
    case ImageFormat::kVmdk:
      (void)inspect_vmdk(path);
      device = open_vmdk(path);
      break;
    case ImageFormat::kVhdx:
      (void)inspect_vhdx(path);
      device = open_vhdx(path, true);
      break;
  }
  if (!device) return false;
  read_sample(**device, seed);
  return true;
}

}  // namespace lamina::storage::testing
