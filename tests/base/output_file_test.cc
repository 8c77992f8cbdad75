// open_output_file's policy on real files: symbolic links refused (the target untouched),
// regular files truncated, new files 0600, character devices written, FIFOs refused at once.

#include "base/output_file.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace lamina {
namespace {

class OutputFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "lamina-out-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    folder_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(folder_); }

  static std::string contents(const std::filesystem::path& path) {
    std::ifstream file(path);
    return std::string(std::istreambuf_iterator<char>(file), {});
  }
  static void put(const std::filesystem::path& path, const std::string& text) {
    std::ofstream(path) << text;
  }

  std::filesystem::path folder_;
};

TEST_F(OutputFileTest, NewFileIsPrivateAndExistingFileIsTruncated) {
  const auto path = folder_ / "console.log";
  const mode_t old_mask = ::umask(0);
  auto created = open_output_file(path, "--serial");
  ::umask(old_mask);
  ASSERT_TRUE(created) << created.error().message();
  struct stat status {};
  ASSERT_EQ(::stat(path.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0600u);
  ASSERT_EQ(::write(created->get(), "first run\n", 10), 10);
  created->reset();

  auto again = open_output_file(path, "--serial");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(contents(path), "") << "each run starts a fresh log";
  ASSERT_EQ(::write(again->get(), "second\n", 7), 7);
  EXPECT_EQ(contents(path), "second\n");
}

TEST_F(OutputFileTest, SymbolicLinkIsRefusedAndItsTargetUntouched) {
  const auto target = folder_ / "precious";
  put(target, "keep me");
  const auto link = folder_ / "console.log";
  std::filesystem::create_symlink(target, link);
  auto refused = open_output_file(link, "--console-port");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(
      refused.error().message().find("--console-port: '" + link.string() + "' is a symbolic link"),
      std::string::npos)
      << refused.error().message();
  EXPECT_EQ(contents(target), "keep me");
  // A dangling link must not create its target either.
  const auto dangling = folder_ / "dangling.log";
  std::filesystem::create_symlink(folder_ / "made-by-link", dangling);
  EXPECT_FALSE(open_output_file(dangling, "--serial"));
  EXPECT_FALSE(std::filesystem::exists(folder_ / "made-by-link"));
}

TEST_F(OutputFileTest, DevicesAreWrittenFifosAndFoldersRefusedWithoutBlocking) {
  auto null_device = open_output_file("/dev/null", "--serial");
  ASSERT_TRUE(null_device) << null_device.error().message();
  EXPECT_EQ(::write(null_device->get(), "x", 1), 1);

  const auto fifo = folder_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto no_reader = open_output_file(fifo, "--serial");  // must return, not wait for a reader
  ASSERT_FALSE(no_reader);
  EXPECT_NE(no_reader.error().message().find("is a FIFO or socket"), std::string::npos)
      << no_reader.error().message();

  auto folder = open_output_file(folder_, "--serial");
  ASSERT_FALSE(folder);
  EXPECT_NE(folder.error().message().find("--serial: cannot open"), std::string::npos)
      << folder.error().message();
}

}  // namespace
}  // namespace lamina
