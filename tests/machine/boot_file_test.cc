#include "machine/boot_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace lamina::machine {
namespace {

namespace fs = std::filesystem;

class BootFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "lamina-boot-file-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    folder_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(folder_, ignored);
  }
  fs::path folder_;
};

TEST_F(BootFile, ReadsARegularFile) {
  const fs::path path = folder_ / "kernel";
  std::ofstream(path) << "kernel bytes";
  auto bytes = read_boot_file(path, "kernel", 1024);
  ASSERT_TRUE(bytes.has_value()) << bytes.error().message();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()),
            "kernel bytes");
}

TEST_F(BootFile, NamesTheFileAndTheProblem) {
  auto missing = read_boot_file(folder_ / "nope", "initrd", 1024);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("initrd"), std::string::npos);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);

  auto folder = read_boot_file(folder_, "kernel", 1024);
  ASSERT_FALSE(folder.has_value());
  EXPECT_EQ(folder.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(folder.error().message().find("not a regular file"), std::string::npos);

  const fs::path empty = folder_ / "empty";
  std::ofstream{empty};
  auto none = read_boot_file(empty, "kernel", 1024);
  ASSERT_FALSE(none.has_value());
  EXPECT_NE(none.error().message().find("empty"), std::string::npos);

  // A sparse 1 GiB file is refused by its size, without reading it.
  const fs::path big = folder_ / "big";
  std::ofstream{big};
  fs::resize_file(big, uint64_t{1} << 30);
  auto large = read_boot_file(big, "initrd", 1 << 20);
  ASSERT_FALSE(large.has_value());
  EXPECT_NE(large.error().message().find("limit"), std::string::npos);
}

}  // namespace
}  // namespace lamina::machine
