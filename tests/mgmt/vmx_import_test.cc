#include "mgmt/vmx_import.h"

#include <gtest/gtest.h>

namespace lamina::mgmt {
namespace {

const std::filesystem::path kVmx = "/images/web/web.vmx";

TEST(VmxImport, ReadsTheSettingsLaminaCarries) {
  auto machine = parse_vmx(
      "displayName = \"web\"\nnumvcpus = \"4\"\nmemsize = \"2048\"\n"
      "sata0:0.present = \"TRUE\"\nsata0:0.fileName = \"b.vmdk\"\n"
      "scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"a.vmdk\"\n"
      "scsi0:0.present = \"FALSE\"\nscsi0:0.fileName = \"gone.vmdk\"\n"
      "ethernet0.present = \"TRUE\"\nethernet0.addressType = \"static\"\n"
      "ethernet0.address = \"00:50:56:00:00:01\"\nethernet0.connectionType = \"bridged\"\n",
      kVmx);
  ASSERT_TRUE(machine) << machine.error().message();
  EXPECT_EQ(machine->cpus, 4u);
  EXPECT_EQ(machine->memory_mib, 2048u);
  ASSERT_EQ(machine->disks.size(), 2u);
  // SCSI before SATA, whatever the file's order; absent slots are skipped.
  EXPECT_EQ(machine->disks[0].file, "/images/web/a.vmdk");
  EXPECT_EQ(machine->disks[1].file, "/images/web/b.vmdk");
  ASSERT_EQ(machine->nics.size(), 1u);
  EXPECT_EQ(machine->nics[0].mac, "00:50:56:00:00:01");
  EXPECT_EQ(machine->nics[0].network, "vmware-bridged");
  EXPECT_TRUE(machine->not_carried.empty());
}

TEST(VmxImport, RefusesDiskNamesOutsideItsFolder) {
  for (const char* name : {"/etc/passwd", "../other/disk.vmdk", "sub/disk.vmdk"}) {
    auto machine = parse_vmx(std::string("memsize = \"256\"\nscsi0:0.present = \"TRUE\"\n"
                                         "scsi0:0.fileName = \"") + name + "\"\n",
                             kVmx);
    ASSERT_FALSE(machine) << name;
    EXPECT_NE(machine.error().message().find("scsi0:0.fileName"), std::string::npos);
  }
}

TEST(VmxImport, RefusesBadValuesNamingTheKey) {
  EXPECT_NE(parse_vmx("memsize = \"lots\"\n", kVmx).error().message().find("memsize"),
            std::string::npos);
  EXPECT_NE(parse_vmx("memsize = \"256\"\nnumvcpus = \"0\"\n", kVmx).error().message().find("numvcpus"),
            std::string::npos);
  EXPECT_NE(parse_vmx("memsize = \"256\"\nethernet0.present = \"TRUE\"\nethernet0.addressType = "
                      "\"static\"\nethernet0.address = \"zz\"\n",
                      kVmx)
                .error()
                .message()
                .find("ethernet0"),
            std::string::npos);
  EXPECT_FALSE(parse_vmx("no equals sign here\n", kVmx));
  EXPECT_FALSE(parse_vmx(std::string(kMaxVmxBytes + 1, '#'), kVmx));
}

TEST(VmxImport, NamesWhatItLeavesOut) {
  auto machine = parse_vmx(
      "memsize = \"256\"\nfirmware = \"efi\"\nide1:0.present = \"TRUE\"\n"
      "ide1:0.deviceType = \"cdrom-image\"\nide1:0.fileName = \"x.iso\"\n"
      "floppy0.present = \"TRUE\"\nsound.present = \"TRUE\"\n",
      kVmx);
  ASSERT_TRUE(machine);
  EXPECT_EQ(machine->not_carried.size(), 4u);
  EXPECT_TRUE(machine->disks.empty());
}

TEST(VmxImport, MakesValidVmNames) {
  EXPECT_EQ(vm_name_from("web server"), "web-server");
  EXPECT_EQ(vm_name_from("-x"), "vm-x");
  EXPECT_EQ(vm_name_from(""), "vm");
  EXPECT_EQ(vm_name_from(std::string(100, 'a')).size(), 63u);
}

}  // namespace
}  // namespace lamina::mgmt
