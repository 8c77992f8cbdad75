// The format-table rows (ImageFormat) for VHDX, qcow2 and VMDK, driven as `lamina disk` and
// open_image() will drive them once the rows are in image_formats().
#include <gtest/gtest.h>

#include "image_builders.h"
#include "image_test_support.h"
#include "storage/image_format.h"
#include "storage/qcow2_image.h"
#include "storage/vhdx_image.h"
#include "storage/vmdk_image.h"

namespace lamina::storage {
namespace {

using testing::TempDir;

const InfoField* field(const ImageInfo& info, std::string_view key) {
  for (const InfoField& candidate : info.fields) {
    if (candidate.key == key) return &candidate;
  }
  return nullptr;
}

ProbeBytes probe_of(const std::vector<std::byte>& file) {
  return ProbeBytes{
      std::span(file).first(std::min<size_t>(file.size(), kProbeHeadBytes)), {}, file.size()};
}

TEST(FormatEntries, VhdxCreatesOpensInspectsAndChecks) {
  TempDir dir;
  ImageFormat format = vhdx_image_format();
  EXPECT_EQ(format.name, "vhdx");
  auto path = (dir / "disk.vhdx").string();
  CreateOptions options;
  options.size = 4u << 20;
  options.block_size = 1u << 20;
  options.type = "sparse";
  EXPECT_FALSE(format.create(path, options)) << "unknown type";
  options.type = "dynamic";
  auto created = format.create(path, options);
  ASSERT_TRUE(created) << created.error().message();
  std::vector<std::byte> data(4096, std::byte{0x42});
  ASSERT_TRUE((*created)->write(0, data));
  auto crashed = dir / "crashed.vhdx";
  std::filesystem::copy_file(path, crashed);  // a pending log
  created->reset();
  EXPECT_TRUE(format.probe(probe_of(testing::read_whole_file(path))));
  EXPECT_FALSE(format.probe(probe_of(testing::build_qcow2(3).file)));

  auto info = format.inspect(path, {});
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->format, "vhdx");
  EXPECT_EQ(info->virtual_size, 4u << 20);
  ASSERT_NE(field(*info, "type"), nullptr);
  EXPECT_EQ(std::get<std::string>(field(*info, "type")->value), "dynamic");
  EXPECT_EQ(std::get<uint64_t>(field(*info, "allocated_bytes")->value), 1u << 20);
  auto report = format.check(path, false, {});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->clean());

  report = format.check(crashed.string(), false, {});
  ASSERT_TRUE(report);
  EXPECT_FALSE(report->clean()) << "a pending log is reported";
  report = format.check(crashed.string(), true, {});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->clean()) << "and replayed by --repair";
  EXPECT_TRUE(format.check(crashed.string(), false, {})->clean());

  // Damage is a problem in the report, not a failure of the command.
  auto bytes = testing::read_whole_file(path);
  bytes[(64u << 10) + 4] ^= std::byte{1};
  bytes[(128u << 10) + 4] ^= std::byte{1};
  testing::write_whole_file(dir / "broken.vhdx", bytes);
  report = format.check((dir / "broken.vhdx").string(), false, {});
  ASSERT_TRUE(report);
  EXPECT_FALSE(report->clean());
}

TEST(FormatEntries, VhdxInspectListsTheParentChain) {
  TempDir dir;
  ImageFormat format = vhdx_image_format();
  ASSERT_TRUE(create_vhdx(dir / "base.vhdx", 4u << 20, {VhdxType::kDynamic, 1u << 20, 512, 4096, "", ""}));
  ASSERT_TRUE(create_vhdx_differencing(dir / "middle.vhdx", dir / "base.vhdx"));
  ASSERT_TRUE(create_vhdx_differencing(dir / "top.vhdx", dir / "middle.vhdx"));
  auto info = format.inspect((dir / "top.vhdx").string(), {});
  ASSERT_TRUE(info) << info.error().message();
  ASSERT_EQ(info->backing_chain.size(), 2u);
  EXPECT_EQ(std::filesystem::path(info->backing_chain[0].path).filename(), "middle.vhdx");
  EXPECT_EQ(std::filesystem::path(info->backing_chain[1].path).filename(), "base.vhdx");
  EXPECT_TRUE(info->warnings.empty());
}

TEST(FormatEntries, Qcow2AndVmdkRowsAreReadOnly) {
  TempDir dir;
  auto qcow2 = testing::build_qcow2(3);
  auto vmdk = testing::build_vmdk_sparse(true);
  testing::write_whole_file(dir / "disk.qcow2", qcow2.file);
  testing::write_whole_file(dir / "self.vmdk", vmdk.file);
  ImageFormat qcow2_format = qcow2_image_format();
  ImageFormat vmdk_format = vmdk_image_format();
  EXPECT_TRUE(qcow2_format.probe(probe_of(qcow2.file)));
  EXPECT_TRUE(vmdk_format.probe(probe_of(vmdk.file)));
  EXPECT_FALSE(vmdk_format.probe(probe_of(qcow2.file)));
  EXPECT_EQ(qcow2_format.create, nullptr);
  EXPECT_EQ(vmdk_format.create, nullptr);
  EXPECT_FALSE(qcow2_format.open((dir / "disk.qcow2").string(), true, {}));
  EXPECT_FALSE(vmdk_format.open((dir / "self.vmdk").string(), true, {}));
  auto device = qcow2_format.open((dir / "disk.qcow2").string(), false, {});
  ASSERT_TRUE(device);
  EXPECT_EQ((*device)->size(), qcow2.expected.size());
  auto info = qcow2_format.inspect((dir / "disk.qcow2").string(), {});
  ASSERT_TRUE(info);
  EXPECT_EQ(std::get<uint64_t>(field(*info, "cluster_size")->value), 512u);
  info = vmdk_format.inspect((dir / "self.vmdk").string(), {});
  ASSERT_TRUE(info);
  EXPECT_EQ(std::get<std::string>(field(*info, "create_type")->value), "streamOptimized");
  EXPECT_EQ(std::get<bool>(field(*info, "compressed")->value), true);
}

}  // namespace
}  // namespace lamina::storage
