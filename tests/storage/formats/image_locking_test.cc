// Image locking for every format (storage/host_file.h): one writer at a time, readers share,
// a writer and a reader exclude each other, parents are held by their children's readers, the
// locks end with the image, and --force-share reads without one. In one process, since flock
// locks belong to open files, not processes; disk_locking_cli_test.sh covers two processes.

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "image_builders.h"
#include "image_test_support.h"
#include "storage/host_file.h"
#include "storage/image_format.h"
#include "storage/image_operations.h"

namespace lamina::storage {
namespace {

using testing::TempDir;

constexpr std::string_view kWriterHolds = "in use by another process (locked for writing)";
constexpr std::string_view kReaderHolds = "in use by another process (locked for reading";

void write_bytes(const std::filesystem::path& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Makes a small image of `format` in `dir`; true when Lamina can open it for writing.
std::string make_image(const TempDir& dir, std::string_view format, bool& writable) {
  std::string path = (dir / ("disk." + std::string(format))).string();
  writable = format == "raw" || format == "vhd" || format == "vhdx";
  if (format == "qcow2") {
    write_bytes(path, testing::build_qcow2(3).file);
  } else if (format == "vmdk") {
    write_bytes(path, testing::build_vmdk_sparse(false).file);
  } else {
    CreateOptions options;
    options.size = 4 << 20;
    auto created = create_image(path, format, options, false);
    EXPECT_TRUE(created) << created.error().message();
  }
  return path;
}

void expect_refused(const Result<std::unique_ptr<BlockDevice>>& opened, std::string_view why) {
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message().find(why), std::string::npos) << opened.error().message();
}

class ImageLocking : public ::testing::TestWithParam<const char*> {};

TEST_P(ImageLocking, TwoWritersExcludeEachOther) {
  TempDir dir;
  bool writable = false;
  std::string path = make_image(dir, GetParam(), writable);
  if (!writable) {
    // Read-only formats never take the writer's lock themselves; another program might.
    auto other = HostFile::open(path, HostFile::Mode::kReadWrite);
    ASSERT_TRUE(other);
    EXPECT_FALSE(HostFile::open(path, HostFile::Mode::kReadWrite));
    return;
  }
  auto first = open_image(path, true);
  ASSERT_TRUE(first) << first.error().message();
  expect_refused(open_image(path, true), kWriterHolds);
  first->reset();
  EXPECT_TRUE(open_image(path, true)) << "the lock ends with the image";
}

TEST_P(ImageLocking, WriterAndReaderExcludeEachOther) {
  TempDir dir;
  bool writable = false;
  std::string path = make_image(dir, GetParam(), writable);
  {
    // A writer (Lamina's own, or another program's lock on the file) keeps readers out.
    auto writer = writable ? open_image(path, true) : Result<std::unique_ptr<BlockDevice>>(nullptr);
    auto foreign = writable ? Result<HostFile>(HostFile())
                            : HostFile::open(path, HostFile::Mode::kReadWrite);
    ASSERT_TRUE(writer && foreign);
    expect_refused(open_image(path, false), kWriterHolds);
    auto inspected = inspect_image(**detect_format(path, {.force_share = true, .references = {}}),
                                   path, {.force_share = true, .references = {}});
    EXPECT_TRUE(inspected) << "--force-share inspects it anyway";
    auto shared = open_image(path, false, {.force_share = true, .references = {}});
    EXPECT_TRUE(shared) << "--force-share reads it anyway";
  }
  // Readers share the image and keep writers out.
  auto reader = open_image(path, false);
  ASSERT_TRUE(reader) << reader.error().message();
  auto second_reader = open_image(path, false);
  EXPECT_TRUE(second_reader) << "readers share";
  if (writable) expect_refused(open_image(path, true), kReaderHolds);
  auto foreign = HostFile::open(path, HostFile::Mode::kReadWrite);
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().message().find(kReaderHolds), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(EveryFormat, ImageLocking,
                         ::testing::Values("raw", "vhd", "vhdx", "qcow2", "vmdk"));

// Parents are read for as long as their children are open: nobody may write them meanwhile.
TEST(ImageLockingChains, ChildrenHoldTheirParents) {
  for (std::string format : {"vhd", "vhdx"}) {
    TempDir dir;
    std::string parent = (dir / ("parent." + format)).string();
    std::string child = (dir / ("child." + format)).string();
    CreateOptions options;
    options.size = 4 << 20;
    ASSERT_TRUE(create_image(parent, format, options, false));
    ASSERT_TRUE(create_differencing(child, parent, false));
    {
      auto opened = open_image(child, true);
      ASSERT_TRUE(opened) << opened.error().message();
      expect_refused(open_image(parent, true), kReaderHolds);
      EXPECT_TRUE(open_image(parent, false)) << "other readers of the parent are fine";
    }
    {
      auto parent_writer = open_image(parent, true);
      ASSERT_TRUE(parent_writer);
      expect_refused(open_image(child, false), kWriterHolds);
    }
    // Merge writes the parent while it reads the child: it must not refuse itself.
    auto merged = merge_image(child, {});
    EXPECT_TRUE(merged) << merged.error().message();
    {
      auto reader = open_image(parent, false);
      ASSERT_TRUE(reader);
      auto refused = merge_image(child, {});
      ASSERT_FALSE(refused) << "merge writes a parent someone reads";
      EXPECT_NE(refused.error().message().find(kReaderHolds), std::string::npos)
          << refused.error().message();
    }
  }
}

}  // namespace
}  // namespace lamina::storage
