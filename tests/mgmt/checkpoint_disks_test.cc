// The disk side of checkpoints (mgmt/checkpoint_disks.h) and their inventory rows: definition
// text rewritten with options kept, child names, the formats refused, and one transaction
// for a checkpoint and the definition it changes.
#include "mgmt/checkpoint_disks.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "mgmt/inventory.h"
#include "storage/image_format.h"
#include "storage/image_operations.h"
#include "virtio/virtio_block.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::mgmt {
namespace {

class TemporaryFolder {
 public:
  TemporaryFolder() {
    path_ = std::filesystem::temp_directory_path() /
            ("lamina-checkpoint-disks-" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~TemporaryFolder() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

TEST(CheckpointDisksTest, ReplacingThePathKeepsOptionsAndPinsTheSerial) {
  EXPECT_EQ(replace_disk_path("/a/disk.vhdx,readonly,serial=S1", "/a/disk@cp.vhdx"),
            "/a/disk@cp.vhdx,readonly,serial=S1");
  // Commas in either path are doubled, as parse_disk_spec reads them.
  const std::string replaced = replace_disk_path("/a/x,,y.vhd,serial=Q", "/a/x,y@c,d.vhd");
  EXPECT_EQ(replaced, "/a/x,,y@c,,d.vhd,serial=Q");
  auto parsed = virtio::parse_disk_spec(replaced);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->path, "/a/x,y@c,d.vhd");
  // Without a serial, the old path's derived one stays the disk's id.
  auto pinned = virtio::parse_disk_spec(replace_disk_path("/a/disk.vhd", "/a/disk@cp.vhd"));
  ASSERT_TRUE(pinned.has_value());
  EXPECT_EQ(pinned->path, "/a/disk@cp.vhd");
  EXPECT_EQ(pinned->serial, virtio::derive_block_serial("/a/disk.vhd"));
}

TEST(CheckpointDisksTest, ChildNamesAreBesideTheParentAndNeverTaken) {
  TemporaryFolder folder;
  const std::string parent = folder / "disk.vhdx";
  EXPECT_EQ(child_image_path(parent, "cp1"), folder / "disk@cp1.vhdx");
  { std::ofstream(folder / "disk@cp1.vhdx") << "x"; }
  EXPECT_EQ(child_image_path(parent, "cp1"), folder / "disk@cp1-2.vhdx");
  // A child of a child is named after the base image.
  EXPECT_EQ(child_image_path(folder / "disk@cp1.vhdx", "cp2"), folder / "disk@cp2.vhdx");
}

TEST(CheckpointDisksTest, OnlyVhdAndVhdxTakeCheckpointsAndParentsAreFound) {
  TemporaryFolder folder;
  const std::string raw = folder / "plain.raw";
  const std::string vhdx = folder / "disk.vhdx";
  storage::CreateOptions create;
  create.size = 1 << 20;
  ASSERT_TRUE(storage::create_image(raw, "raw", create, false).has_value());
  ASSERT_TRUE(storage::create_image(vhdx, "vhdx", create, false).has_value());
  auto refused = check_checkpoint_format(raw);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("VHD or VHDX"), std::string::npos);
  EXPECT_TRUE(check_checkpoint_format(vhdx).has_value());

  const std::string child = child_image_path(vhdx, "cp");
  ASSERT_TRUE(storage::create_differencing(child, vhdx, false).has_value());
  auto parent = image_parent(child);
  ASSERT_TRUE(parent.has_value()) << parent.error().message();
  ASSERT_TRUE(parent->has_value());
  EXPECT_TRUE(std::filesystem::equivalent(**parent, vhdx));
  auto base = image_parent(vhdx);
  ASSERT_TRUE(base.has_value());
  EXPECT_FALSE(base->has_value());
}

TEST(CheckpointInventoryTest, ACheckpointAndItsDefinitionChangeAreOneTransaction) {
  TemporaryFolder folder;
  auto inventory = Inventory::open(folder / "inventory.db");
  ASSERT_TRUE(inventory.has_value()) << inventory.error().message();
  VmRecord vm{.name = "web",
              .uuid = "u-1",
              .definition = {{"disks", {"/d/disk.vhdx"}}},
              .autostart = false,
              .on_crash = "stay",
              .created = utc_now()};
  ASSERT_TRUE((*inventory)->insert(vm).has_value());
  VmRecord moved = vm;
  moved.definition["disks"][0] = "/d/disk@a.vhdx";
  CheckpointRecord checkpoint{.vm = "web",
                              .name = "a",
                              .created = utc_now(),
                              .state_file = "/s/a.state",
                              .disks = {"/d/disk.vhdx"}};
  ASSERT_TRUE((*inventory)->add_checkpoint(checkpoint, moved).has_value());
  EXPECT_EQ((*(*inventory)->find("web"))->definition["disks"][0], "/d/disk@a.vhdx");

  // A second checkpoint of the same name fails whole: the definition stays as it was.
  VmRecord again = moved;
  again.definition["disks"][0] = "/d/disk@other.vhdx";
  EXPECT_FALSE((*inventory)->add_checkpoint(checkpoint, again).has_value());
  EXPECT_EQ((*(*inventory)->find("web"))->definition["disks"][0], "/d/disk@a.vhdx");
  auto listed = (*inventory)->checkpoints("web");
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().state_file, "/s/a.state");
  EXPECT_EQ(listed->front().disks, checkpoint.disks);

  ASSERT_TRUE((*inventory)->remove_checkpoint("web", "a", &vm).has_value());
  EXPECT_EQ((*(*inventory)->find("web"))->definition["disks"][0], "/d/disk.vhdx");
  EXPECT_FALSE((*inventory)->remove_checkpoint("web", "a", nullptr).has_value());
  // Deleting a VM deletes its checkpoints.
  ASSERT_TRUE((*inventory)->add_checkpoint(checkpoint, vm).has_value());
  ASSERT_TRUE((*inventory)->remove("web").has_value());
  EXPECT_TRUE((*inventory)->checkpoints("web")->empty());
}

}  // namespace
}  // namespace lamina::mgmt
