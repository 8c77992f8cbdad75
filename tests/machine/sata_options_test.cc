// SATA drives and the boot order as a user gives them: --disk ...,bus=sata, --cdrom, --boot
// (and the definition's fields), their validation, and the fw_cfg bootorder lines SeaBIOS
// matches against its AHCI and virtio drives (src/boot.c: "/pci@i0cf8/*@SLOT/drive@PORT/disk@0"
// and "/pci@i0cf8/*@SLOT").
#include <gtest/gtest.h>

#include "machine/boot_order.h"
#include "machine/vm_config.h"
#include "machine/vm_definition.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::machine {
namespace {

virtio::DiskSpec disk(std::string_view text) {
  auto spec = virtio::parse_disk_spec(text);
  EXPECT_TRUE(spec) << text;
  return spec ? *spec : virtio::DiskSpec{};
}

TEST(SataOptions, DiskBusOptionRoutesTheDisk) {
  EXPECT_EQ(disk("/a.vhd").bus, virtio::DiskBus::kVirtio);
  EXPECT_EQ(disk("/a.vhd,bus=sata").bus, virtio::DiskBus::kSata);
  EXPECT_EQ(disk("/a.vhd,readonly,bus=virtio").bus, virtio::DiskBus::kVirtio);
  EXPECT_FALSE(virtio::parse_disk_spec("/a.vhd,bus=ide"));
  VmConfig config;
  add_disk(config, disk("/a.vhd,bus=sata"));
  add_disk(config, disk("/b.vhd"));
  ASSERT_EQ(config.sata_disks.size(), 1u);
  ASSERT_EQ(config.disks.size(), 1u);
  EXPECT_EQ(config.sata_disks[0].path, "/a.vhd");
}

TEST(SataOptions, ParsesBoot) {
  using enum BootDevice;
  EXPECT_EQ(*parse_boot("disk"), (std::vector{kDisk, kCdrom}));
  EXPECT_EQ(*parse_boot("cdrom"), (std::vector{kCdrom, kDisk}));
  EXPECT_EQ(*parse_boot("order=cdrom,disk"), (std::vector{kCdrom, kDisk}));
  EXPECT_EQ(*parse_boot("order=disk"), (std::vector{kDisk, kCdrom}));
  for (const char* bad : {"", "net", "order=", "order=disk,disk", "order=cdrom,", "c"}) {
    EXPECT_FALSE(parse_boot(bad)) << bad;
  }
}

TEST(SataOptions, CdromBootsFirstUnlessBootSaysOtherwise) {
  VmConfig config;
  EXPECT_TRUE(effective_boot_order(config).empty()) << "SeaBIOS's own order";
  EXPECT_EQ(effective_firmware(config).kind, FirmwareKind::kNone);
  config.cdrom = "/cd.iso";
  EXPECT_EQ(effective_firmware(config).kind, FirmwareKind::kBios) << "a CD alone boots the BIOS";
  EXPECT_EQ(effective_boot_order(config).front(), BootDevice::kCdrom);
  config.boot = *parse_boot("disk");
  EXPECT_EQ(effective_boot_order(config).front(), BootDevice::kDisk);
}

TEST(SataOptions, BootOrderNamesAhciPortsAndVirtioSlots) {
  VmConfig config;
  add_disk(config, disk("/s0.vhd,bus=sata"));
  add_disk(config, disk("/s1.vhd,bus=sata"));
  add_disk(config, disk("/v.vhd"));
  config.cdrom = "/cd.iso";
  const std::vector<uint8_t> virtio_slots = {0x0b};
  EXPECT_EQ(firmware_boot_order(config, virtio_slots),
            (std::vector<std::string>{"/pci@i0cf8/sata@1e/drive@2/disk@0",
                                      "/pci@i0cf8/sata@1e/drive@0/disk@0",
                                      "/pci@i0cf8/sata@1e/drive@1/disk@0", "/pci@i0cf8/disk@b"}));
  config.boot = *parse_boot("disk");
  EXPECT_EQ(firmware_boot_order(config, virtio_slots).back(), "/pci@i0cf8/sata@1e/drive@2/disk@0");
  config.cdrom.reset();
  config.boot.clear();
  EXPECT_TRUE(firmware_boot_order(config, virtio_slots).empty());
}

TEST(SataOptions, ValidationChecksPortsAndBoot) {
  VmConfig config;
  config.cdrom = "/cd.iso";
  EXPECT_TRUE(validate(config, HostChecks::kNone));
  for (int i = 0; i < 5; ++i) add_disk(config, disk("/d.vhd,bus=sata,readonly"));
  EXPECT_TRUE(validate(config, HostChecks::kNone)) << "five disks and the CD fill six ports";
  add_disk(config, disk("/e.vhd,bus=sata"));
  auto refused = validate(config, HostChecks::kNone);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("6 ports"), std::string::npos);
  VmConfig direct;
  direct.kernel = "/vmlinuz";
  direct.boot = *parse_boot("cdrom");
  EXPECT_FALSE(validate(direct, HostChecks::kNone)) << "--boot needs the BIOS";
}

TEST(SataOptions, DefinitionsTakeCdromBootAndSataDisks) {
  auto config = vm_config_from_definition(
      {{"disks", {"/a.vhd,bus=sata", "/b.vhd"}}, {"cdrom", "/cd.iso"}, {"boot", "order=disk,cdrom"}},
      HostChecks::kNone);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->sata_disks.size(), 1u);
  EXPECT_EQ(config->disks.size(), 1u);
  EXPECT_EQ(config->cdrom, "/cd.iso");
  EXPECT_EQ(config->boot.front(), BootDevice::kDisk);
  EXPECT_FALSE(vm_config_from_definition({{"boot", "floppy"}}, HostChecks::kNone));
  EXPECT_FALSE(vm_config_from_definition({{"cdrom", 3}}, HostChecks::kNone));
}

}  // namespace
}  // namespace lamina::machine
