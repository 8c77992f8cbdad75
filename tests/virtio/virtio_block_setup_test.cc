// `--disk PATH[,readonly][,serial=S]`: parsing, validation against real files, opening.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>
#include <cstdlib>

#include "virtio/virtio_block_setup.h"
#include "virtio_block_test_support.h"

namespace lamina::virtio::test {
namespace {

std::string make_file(const TempFolder& folder, const std::string& name, uint64_t size) {
  const std::string path = folder.file(name);
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
  ::close(fd);
  return path;
}

TEST(VirtioBlockSetupTest, ParsesPathAndOptions) {
  auto plain = parse_disk_spec("/images/a.vhd");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->path, "/images/a.vhd");
  EXPECT_FALSE(plain->read_only);
  EXPECT_TRUE(plain->serial.empty());

  auto full = parse_disk_spec("b.vhdx,serial=DATA-01,readonly");
  ASSERT_TRUE(full.has_value());
  EXPECT_EQ(full->path, "b.vhdx");
  EXPECT_TRUE(full->read_only);
  EXPECT_EQ(full->serial, "DATA-01");

  // A doubled comma is a comma in the path, as in QEMU.
  auto commas = parse_disk_spec("/images/a,,b,,,,.vhd,readonly");
  ASSERT_TRUE(commas.has_value()) << commas.error().message();
  EXPECT_EQ(commas->path, "/images/a,b,,.vhd");
  EXPECT_TRUE(commas->read_only);
  auto trailing = parse_disk_spec("disk,,,serial=X");
  ASSERT_TRUE(trailing.has_value()) << trailing.error().message();
  EXPECT_EQ(trailing->path, "disk,");
  EXPECT_EQ(trailing->serial, "X");

  for (const char* bad :
       {"", ",readonly", "a.vhd,", "a.vhd,ro", "a.vhd,serial=", "a.vhd,serial=x,serial=y",
        "a.vhd,serial=123456789012345678901", "a.vhd,readonly,,"}) {
    auto parsed = parse_disk_spec(bad);
    EXPECT_FALSE(parsed.has_value()) << bad;
    if (!parsed) {
      EXPECT_NE(parsed.error().message().find("--disk"), std::string::npos);
    }
  }
}

TEST(VirtioBlockSetupTest, ValidationNamesWhatIsWrong) {
  TempFolder folder;
  const std::string raw = make_file(folder, "disk.raw", 1 << 20);
  EXPECT_TRUE(validate_disks(std::vector<DiskSpec>{{raw, false, ""}}).has_value());

  auto missing = validate_disks(std::vector<DiskSpec>{{folder.file("nope.vhd"), false, ""}});
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("no such file"), std::string::npos);

  auto directory = validate_disks(std::vector<DiskSpec>{{folder.file(""), true, ""}});
  ASSERT_FALSE(directory.has_value());
  EXPECT_NE(directory.error().message().find("not a regular file"), std::string::npos);

  // One image twice: only when both are read-only.
  auto twice = validate_disks(std::vector<DiskSpec>{{raw, false, ""}, {raw, true, ""}});
  ASSERT_FALSE(twice.has_value());
  EXPECT_NE(twice.error().message().find("twice"), std::string::npos);
  EXPECT_TRUE(validate_disks(std::vector<DiskSpec>{{raw, true, ""}, {raw, true, ""}}).has_value());
}

TEST(VirtioBlockSetupTest, ReadOnlyFormatsNeedReadonly) {
  if (std::system("command -v qemu-img >/dev/null 2>&1") != 0) GTEST_SKIP() << "no qemu-img";
  TempFolder folder;
  const std::string qcow2 = folder.file("disk.qcow2");
  ASSERT_EQ(std::system(("qemu-img create -q -f qcow2 " + qcow2 + " 4M").c_str()), 0);
  auto writable = validate_disks(std::vector<DiskSpec>{{qcow2, false, ""}});
  ASSERT_FALSE(writable.has_value());
  EXPECT_NE(writable.error().message().find("add ',readonly'"), std::string::npos);
  EXPECT_TRUE(validate_disks(std::vector<DiskSpec>{{qcow2, true, ""}}).has_value());
  auto disk = open_disk({qcow2, true, ""});
  ASSERT_TRUE(disk.has_value()) << disk.error().message();
  auto device = make_virtio_block(*disk);
  ASSERT_TRUE(device.has_value()) << device.error().message();
  EXPECT_TRUE((*device)->read_only());
  EXPECT_EQ((*device)->capacity_sectors(), 4u * 1024 * 1024 / 512);
}

TEST(VirtioBlockSetupTest, OpensWithTheGivenOrADerivedSerial) {
  TempFolder folder;
  const std::string raw = make_file(folder, "disk.raw", 1 << 20);
  {
    auto disk = open_disk({raw, false, "MY-DISK"});
    ASSERT_TRUE(disk.has_value());
    // Devices of successive Machines share the one open image.
    for (int boot = 0; boot < 2; ++boot) {
      auto named = make_virtio_block(*disk);
      ASSERT_TRUE(named.has_value());
      EXPECT_EQ((*named)->serial(), "MY-DISK");
      EXPECT_FALSE((*named)->read_only());
    }
  }
  auto disk = open_disk({raw, true, ""});
  ASSERT_TRUE(disk.has_value());
  auto derived = make_virtio_block(*disk);
  ASSERT_TRUE(derived.has_value());
  EXPECT_EQ((*derived)->serial(), derive_block_serial(raw));
  EXPECT_TRUE((*derived)->read_only());
}

}  // namespace
}  // namespace lamina::virtio::test
