#include "machine/kernel_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "test_images.h"

namespace lamina::machine {
namespace {

namespace fs = std::filesystem;
using testing::Bytes;
using testing::with_size;

// A kernel-like payload (a zstd frame and the size trailer) whose content depends on `seed`.
struct Payload {
  Bytes content;
  Bytes payload;
};
Payload make_payload(uint8_t seed, size_t size = 256 << 10) {
  Payload made;
  made.content.resize(size);
  for (size_t i = 0; i < size; ++i) made.content[i] = std::byte{static_cast<uint8_t>((i * seed) ^ (i >> 7))};
  Bytes frame(ZSTD_compressBound(size));
  const size_t length = ZSTD_compress(frame.data(), frame.size(), made.content.data(), size, 3);
  EXPECT_FALSE(ZSTD_isError(length));
  frame.resize(length);
  made.payload = with_size(frame, size);
  return made;
}

std::vector<fs::path> entries(const fs::path& folder) {
  std::vector<fs::path> found;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(folder, error)) found.push_back(item.path());
  std::sort(found.begin(), found.end());
  return found;
}

class KernelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() /
              ("lamina-kernel-cache-" + std::to_string(::getpid()) + "-" +
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(folder_);
  }
  void TearDown() override { fs::remove_all(folder_); }
  fs::path folder_;
};

TEST_F(KernelCacheTest, StoresAnEntryAndServesTheNextBootFromIt) {
  const Payload a = make_payload(3);
  const Payload b = make_payload(5);
  KernelCache cache(folder_);
  auto first = cache.decompress(a.payload, 64 << 20);
  ASSERT_TRUE(first.has_value()) << first.error().message();
  EXPECT_TRUE(std::ranges::equal(first->bytes(), a.content));
  ASSERT_EQ(entries(folder_).size(), 1u);
  const fs::path entry_a = entries(folder_)[0];
  EXPECT_EQ(entry_a.extension(), ".zst");
  EXPECT_EQ(entry_a.stem().string().size(), 64u);  // SHA-256 in hex

  ASSERT_TRUE(cache.decompress(b.payload, 64 << 20).has_value());
  ASSERT_EQ(entries(folder_).size(), 2u);
  const fs::path entry_b = entries(folder_)[0] == entry_a ? entries(folder_)[1] : entries(folder_)[0];
  // B's entry now holds A's kernel (same size): the next decompression of B reads the entry
  // rather than the payload, which shows the lookup is used.
  fs::copy_file(entry_a, entry_b, fs::copy_options::overwrite_existing);
  auto from_entry = cache.decompress(b.payload, 64 << 20);
  ASSERT_TRUE(from_entry.has_value());
  EXPECT_TRUE(std::ranges::equal(from_entry->bytes(), a.content));
}

TEST_F(KernelCacheTest, ADamagedOrMisSizedEntryIsReplacedByTheRealKernel) {
  const Payload a = make_payload(7);
  KernelCache cache(folder_);
  ASSERT_TRUE(cache.decompress(a.payload, 64 << 20).has_value());
  const fs::path entry = entries(folder_).at(0);
  {
    // One byte inside the zstd frame flipped: its checksum (or decoding) fails.
    std::fstream file(entry, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(100);
    char byte = 0;
    file.read(&byte, 1);
    file.seekp(100);
    byte = static_cast<char>(byte ^ 0x5a);
    file.write(&byte, 1);
  }
  auto repaired = cache.decompress(a.payload, 64 << 20);
  ASSERT_TRUE(repaired.has_value());
  EXPECT_TRUE(std::ranges::equal(repaired->bytes(), a.content));
  // Rewritten: a second read from the entry gives the real kernel again.
  auto again = cache.decompress(a.payload, 64 << 20);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(std::ranges::equal(again->bytes(), a.content));

  // An entry of another size (a different kernel under this name) is not used either.
  const Payload small = make_payload(9, 64 << 10);
  KernelCache other(folder_ / "other");
  ASSERT_TRUE(other.decompress(small.payload, 64 << 20).has_value());
  fs::copy_file(entries(folder_ / "other").at(0), entry, fs::copy_options::overwrite_existing);
  auto not_small = cache.decompress(a.payload, 64 << 20);
  ASSERT_TRUE(not_small.has_value());
  EXPECT_TRUE(std::ranges::equal(not_small->bytes(), a.content));
}

TEST_F(KernelCacheTest, AnUnusableFolderOnlyCostsTheCache) {
  const Payload a = make_payload(11);
  // A file where the folder should be: nothing can be stored, the kernel still comes out.
  fs::create_directories(folder_);
  std::ofstream(folder_ / "file") << "x";
  KernelCache cache(folder_ / "file" / "kernels");
  auto kernel = cache.decompress(a.payload, 64 << 20);
  ASSERT_TRUE(kernel.has_value());
  EXPECT_TRUE(std::ranges::equal(kernel->bytes(), a.content));
  EXPECT_EQ(entries(folder_).size(), 1u);
}

TEST_F(KernelCacheTest, ACorruptPayloadFailsAsWithoutACacheAndStoresNothing) {
  Payload a = make_payload(13);
  // The frame cut short, the size trailer kept.
  a.payload.erase(a.payload.begin() + 200, a.payload.end() - 4);
  KernelCache cache(folder_);
  auto kernel = cache.decompress(a.payload, 64 << 20);
  ASSERT_FALSE(kernel.has_value());
  EXPECT_EQ(kernel.error().code(), ErrorCode::kCorrupt);
  EXPECT_TRUE(entries(folder_).empty());
  // The bomb limit holds for the cached path too.
  const Payload big = make_payload(15, 1 << 20);
  EXPECT_FALSE(cache.decompress(big.payload, 512 << 10).has_value());
}

TEST_F(KernelCacheTest, KeepsTheMostRecentlyUsedEntries) {
  KernelCache cache(folder_, 2);
  const Payload a = make_payload(17), b = make_payload(19), c = make_payload(21);
  ASSERT_TRUE(cache.decompress(a.payload, 64 << 20).has_value());
  const fs::path entry_a = entries(folder_).at(0);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(cache.decompress(b.payload, 64 << 20).has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(cache.decompress(a.payload, 64 << 20).has_value());  // A used again: B is oldest
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(cache.decompress(c.payload, 64 << 20).has_value());
  const auto left = entries(folder_);
  ASSERT_EQ(left.size(), 2u);
  EXPECT_TRUE(std::ranges::find(left, entry_a) != left.end());
}

}  // namespace
}  // namespace lamina::machine
