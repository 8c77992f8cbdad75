// The fuzz target's paths under GCC in every CI run: valid images with random bytes changed in
// their metadata (with checksums fixed up half of the time, so mutations reach past the
// checksum gate), random truncations and random garbage. Passing means no crash, no hang and
// no sanitizer report (run it with -DLAMINA_SANITIZE=ON for full effect).

#include <gtest/gtest.h>

#include <random>

#include "base/byte_order.h"
#include "storage/image_operations.h"
#include "storage/vhd_format.h"
#include "test_support.h"
#include "sparse_fuzz_file.h"
#include "vhd_fuzz_input.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::vector<uint8_t> to_bytes(const std::vector<std::byte>& bytes) {
  std::vector<uint8_t> out(bytes.size());
  std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// Recomputes the footer checksums (both copies) and the dynamic header's, when present.
void fix_checksums(std::vector<uint8_t>& file) {
  auto bytes = std::as_writable_bytes(std::span(file));
  for (size_t at : {size_t{0}, file.size() - 512}) {
    if (file.size() < 512 || !vhd::has_footer_cookie(bytes.subspan(at))) continue;
    store_be<uint32_t>(file.data() + at + 64, vhd::checksum(bytes.subspan(at, 512), 64));
  }
  if (file.size() >= 1536 && std::memcmp(file.data() + 512, "cxsparse", 8) == 0) {
    store_be<uint32_t>(file.data() + 512 + 36, vhd::checksum(bytes.subspan(512, 1024), 36));
  }
}

class Robustness : public ::testing::Test {
 protected:
  void SetUp() override {
    CreateOptions options;
    options.size = 4 * kMiB;
    options.block_size = 512 * 1024;
    ASSERT_TRUE(create_image(dir_.file("base.vhd"), "vhd", options, false));
    {
      auto base = open_image(dir_.file("base.vhd"), true);
      ASSERT_TRUE((*base)->write(512 * 1024, test::pattern(kMiB, 1)));
    }
    ASSERT_TRUE(create_differencing(dir_.file("child.vhd"), dir_.file("base.vhd"), false));
    {
      auto child = open_image(dir_.file("child.vhd"), true);
      ASSERT_TRUE((*child)->write(kMiB + 1024, test::pattern(2048, 2)));
    }
    options.size = 64 * 1024;
    options.type = "fixed";
    ASSERT_TRUE(create_image(dir_.file("fixed.vhd"), "vhd", options, false));
    for (const char* name : {"base.vhd", "child.vhd", "fixed.vhd"}) {
      seeds_.push_back(to_bytes(test::read_file(dir_.file(name))));
    }
    std::filesystem::create_directory(dir_.file("fuzz"));
    // A parent for mutated children to find beside them.
    std::filesystem::copy_file(dir_.file("base.vhd"), dir_.file("fuzz/base.vhd"));
  }

  test::TempDir dir_;
  std::vector<std::vector<uint8_t>> seeds_;
};

TEST_F(Robustness, SeedsThemselvesRunClean) {
  for (const auto& seed : seeds_) test::run_vhd_input(seed, dir_.file("fuzz"));
}

TEST_F(Robustness, MutatedMetadataNeverCrashes) {
  std::mt19937 random(20240605);
  for (int iteration = 0; iteration < 1500; ++iteration) {
    std::vector<uint8_t> file = seeds_[random() % seeds_.size()];
    int mutations = 1 + static_cast<int>(random() % 6);
    for (int m = 0; m < mutations; ++m) {
      // Mostly metadata: the head (footer copy, header, locators, BAT) and the trailing footer.
      size_t region = random() % 4;
      size_t at = region == 0 ? file.size() - 1 - random() % 512
                              : random() % std::min<size_t>(file.size(), region == 1 ? 4096 : file.size());
      uint8_t value = random() % 3 == 0 ? static_cast<uint8_t>(0xff)
                                        : static_cast<uint8_t>(random());
      file[at] = value;
    }
    if (random() % 2 == 0) fix_checksums(file);
    if (random() % 10 == 0) file.resize(random() % file.size());
    test::run_vhd_input(file, dir_.file("fuzz"));
  }
}

TEST_F(Robustness, GarbageAndTinyFilesNeverCrash) {
  std::mt19937 random(7);
  for (int iteration = 0; iteration < 200; ++iteration) {
    std::vector<uint8_t> file(random() % 4096);
    for (auto& byte : file) byte = static_cast<uint8_t>(random());
    if (file.size() >= 512 && iteration % 2 == 0) {
      std::memcpy(file.data() + file.size() - 512, "conectix", 8);
      fix_checksums(file);
    }
    test::run_vhd_input(file, dir_.file("fuzz"));
  }
}

// Sparse inputs (sparse_fuzz_file.h): the head and the footer of a seed around a hole, with
// the header's BAT size and place mutated, so the BAT (or what the header claims is one) lies
// in the hole: the shape of issue 16's 8 KB image with a 4M-entry BAT.
TEST_F(Robustness, SparseImagesWithClaimedTablesNeverCrash) {
  std::mt19937 random(16);
  for (int iteration = 0; iteration < 24; ++iteration) {
    std::vector<uint8_t> file = seeds_[random() % seeds_.size()];
    if (file.size() < 4096 + 512) continue;
    std::vector<uint8_t> head(file.begin(), file.begin() + 4096);
    std::vector<uint8_t> tail(file.end() - 512, file.end());
    // Dynamic header at 512: table offset (16..23) and max table entries (28..31), big-endian.
    uint32_t entries = 1u << (random() % 23);  // up to 4M, the image
    for (int i = 0; i < 4; ++i) head[512 + 28 + i] = static_cast<uint8_t>(entries >> (24 - 8 * i));
    if (random() % 2 == 0) head[512 + 16 + 7] = static_cast<uint8_t>(random() % 8 * 2);
    std::vector<uint8_t> joined = head;
    joined.insert(joined.end(), tail.begin(), tail.end());
    fix_checksums(joined);
    std::copy(joined.begin(), joined.begin() + 4096, head.begin());
    std::copy(joined.end() - 512, joined.end(), tail.begin());
    uint32_t hole_sectors = static_cast<uint32_t>(random() % (1u << 20));
    auto input = test::encode_sparse({{0, head}, {hole_sectors, tail}});
    test::run_vhd_input(input, dir_.file("fuzz"));
  }
}

}  // namespace
}  // namespace lamina::storage
