#pragma once
// Helpers for the image format tests: a temporary folder, a raw "truth" file with a known
// random pattern and holes, running qemu-img, and comparing a BlockDevice with the truth.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "storage/block_device.h"

namespace lamina::storage::testing {

// A fresh folder under the system temp folder, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(std::string_view name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A region of the truth file that holds random bytes; everything else is zero.
struct Region {
  uint64_t offset;
  uint64_t length;
};

// Writes a sparse raw file of `size` bytes whose `regions` hold bytes from a seeded generator.
void write_pattern_file(const std::filesystem::path& path, uint64_t size,
                        const std::vector<Region>& regions, uint32_t seed);

std::vector<std::byte> read_file_range(const std::filesystem::path& path, uint64_t offset,
                                       uint64_t length);
std::vector<std::byte> read_whole_file(const std::filesystem::path& path);
void write_whole_file(const std::filesystem::path& path, std::span<const std::byte> data);

// Runs a shell command quietly; returns its exit status (127 when the shell failed).
int run_command(const std::string& command);
bool have_qemu_img();

// Compares device content with the truth file over [offset, offset + length), reading in
// pieces of `piece` bytes (odd sizes exercise cluster boundaries). Returns "" when equal,
// else a description of the first difference or error.
// "" when the files hold the same bytes, else where they first differ.
std::string first_difference(const std::filesystem::path& left, const std::filesystem::path& right);

std::string compare_with_truth(BlockDevice& device, const std::filesystem::path& truth,
                               uint64_t offset, uint64_t length, uint64_t piece);

}  // namespace lamina::storage::testing
