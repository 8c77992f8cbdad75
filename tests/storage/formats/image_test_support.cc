#include "image_test_support.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>

namespace lamina::storage::testing {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "lamina-formats-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void write_pattern_file(const std::filesystem::path& path, uint64_t size,
                        const std::vector<Region>& regions, uint32_t seed) {
  int descriptor = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (descriptor < 0) throw std::runtime_error("cannot create " + path.string());
  if (::ftruncate(descriptor, static_cast<off_t>(size)) != 0)
    throw std::runtime_error("ftruncate failed");
  std::mt19937_64 generator(seed);
  for (const Region& region : regions) {
    std::vector<std::byte> bytes(region.length);
    for (auto& value : bytes) value = static_cast<std::byte>(generator() & 0xff);
    if (::pwrite(descriptor, bytes.data(), bytes.size(), static_cast<off_t>(region.offset)) !=
        static_cast<ssize_t>(bytes.size())) {
      throw std::runtime_error("pwrite failed");
    }
  }
  ::close(descriptor);
}

std::vector<std::byte> read_file_range(const std::filesystem::path& path, uint64_t offset,
                                       uint64_t length) {
  std::vector<std::byte> bytes(length);
  int descriptor = ::open(path.c_str(), O_RDONLY);
  if (descriptor < 0) throw std::runtime_error("cannot open " + path.string());
  ssize_t got = ::pread(descriptor, bytes.data(), length, static_cast<off_t>(offset));
  ::close(descriptor);
  if (got < 0) throw std::runtime_error("pread failed");
  bytes.resize(static_cast<size_t>(got));
  return bytes;
}

std::vector<std::byte> read_whole_file(const std::filesystem::path& path) {
  return read_file_range(path, 0, std::filesystem::file_size(path));
}

void write_whole_file(const std::filesystem::path& path, std::span<const std::byte> data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
}

int run_command(const std::string& command) {
  int status = std::system(("(" + command + ") >/dev/null 2>&1").c_str());
  if (status == -1 || !WIFEXITED(status)) return 127;
  return WEXITSTATUS(status);
}

bool have_qemu_img() { return run_command("qemu-img --version") == 0; }

std::string first_difference(const std::filesystem::path& left,
                             const std::filesystem::path& right) {
  auto a = read_whole_file(left);
  auto b = read_whole_file(right);
  if (a.size() != b.size()) return fmt::format("sizes differ: {} and {}", a.size(), b.size());
  auto mismatch = std::mismatch(a.begin(), a.end(), b.begin());
  if (mismatch.first == a.end()) return "";
  return fmt::format("first difference at byte {:#x}", mismatch.first - a.begin());
}

std::string compare_with_truth(BlockDevice& device, const std::filesystem::path& truth,
                               uint64_t offset, uint64_t length, uint64_t piece) {
  uint64_t position = offset;
  while (position < offset + length) {
    uint64_t count = std::min(piece, offset + length - position);
    std::vector<std::byte> expected = read_file_range(truth, position, count);
    if (expected.size() != count) return fmt::format("truth file is short at {:#x}", position);
    std::vector<std::byte> actual(count);
    auto result = device.read(position, actual);
    if (!result) return fmt::format("read at {:#x} failed: {}", position, result.error().message());
    for (uint64_t index = 0; index < count; ++index) {
      if (actual[index] != expected[index])
        return fmt::format("first difference at byte {:#x}", position + index);
    }
    position += count;
  }
  return "";
}

}  // namespace lamina::storage::testing
