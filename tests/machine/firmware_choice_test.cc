// Which firmware a VM boots through: --firmware's values, the default (a BIOS for a VM with
// disks that names nothing of a direct kernel boot) and the definition's "firmware" field.
#include <gtest/gtest.h>

#include "machine/vm_config.h"
#include "machine/vm_definition.h"

namespace lamina::machine {
namespace {

TEST(FirmwareChoice, ParsesTheValues) {
  EXPECT_EQ(parse_firmware("none")->kind, FirmwareKind::kNone);
  auto bios = parse_firmware("bios");
  ASSERT_TRUE(bios);
  EXPECT_EQ(bios->kind, FirmwareKind::kBios);
  EXPECT_EQ(bios->file, kDefaultBiosPath);
  auto file = parse_firmware("bios:/x/seabios.bin");
  ASSERT_TRUE(file);
  EXPECT_EQ(file->file, "/x/seabios.bin");
  for (const char* bad : {"", "uefi", "bios:", "BIOS", "none:x"}) {
    EXPECT_FALSE(parse_firmware(bad)) << bad;
  }
}

TEST(FirmwareChoice, DefaultsToBiosForDisksWithoutADirectBoot) {
  VmConfig config;
  EXPECT_EQ(effective_firmware(config).kind, FirmwareKind::kNone) << "the default guest";
  config.disks.push_back({});
  EXPECT_EQ(effective_firmware(config).kind, FirmwareKind::kBios);
  config.cmdline = "console=ttyS0";
  EXPECT_EQ(effective_firmware(config).kind, FirmwareKind::kNone);
  config.cmdline.clear();
  config.kernel = "/boot/vmlinuz";
  EXPECT_EQ(effective_firmware(config).kind, FirmwareKind::kNone);
  config.firmware = FirmwareChoice{FirmwareKind::kBios, "/f.bin"};
  EXPECT_EQ(effective_firmware(config).file, "/f.bin") << "an explicit choice wins";
}

TEST(FirmwareChoice, ValidationRefusesADirectBootWithFirmware) {
  VmConfig config;
  config.firmware = FirmwareChoice{FirmwareKind::kBios, kDefaultBiosPath};
  EXPECT_TRUE(validate(config, HostChecks::kNone));
  config.cmdline = "quiet";
  EXPECT_FALSE(validate(config, HostChecks::kNone));
  config.cmdline.clear();
  config.accel = AccelKind::kKvm;
  EXPECT_FALSE(validate(config, HostChecks::kNone));
}

TEST(FirmwareChoice, DefinitionsTakeTheField) {
  auto config = vm_config_from_definition({{"firmware", "bios:/opt/bios.bin"}}, HostChecks::kNone);
  ASSERT_TRUE(config) << config.error().message();
  ASSERT_TRUE(config->firmware);
  EXPECT_EQ(config->firmware->file, "/opt/bios.bin");
  EXPECT_FALSE(vm_config_from_definition({{"firmware", "efi"}}, HostChecks::kNone));
  EXPECT_FALSE(vm_config_from_definition({{"firmware", 1}}, HostChecks::kNone));
}

}  // namespace
}  // namespace lamina::machine
