#include "machine/acpi/acpi_tables.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "base/byte_order.h"
#include "machine/acpi/aml.h"
#include "machine/acpi/fadt.h"
#include "machine/acpi/madt.h"

namespace lamina::machine::acpi {
namespace {

namespace fs = std::filesystem;

MemoryLayout layout_of(uint64_t ram) {
  auto layout = MemoryLayout::create({.ram_size = ram});
  EXPECT_TRUE(layout.has_value());
  return *layout;
}

AcpiTables build(const AcpiConfig& config, uint64_t ram = 512 * kMiB) {
  const MemoryLayout layout = layout_of(ram);
  auto tables = build_acpi_tables(config, layout, kRsdpAddress, layout.acpi_area_base(),
                                  layout.acpi_area_size());
  EXPECT_TRUE(tables.has_value()) << tables.error().message();
  return tables ? *tables : AcpiTables{};
}

uint32_t u32_at(const Bytes& bytes, size_t offset) { return load_le<uint32_t>(bytes.data() + offset); }
uint64_t u64_at(const Bytes& bytes, size_t offset) { return load_le<uint64_t>(bytes.data() + offset); }
uint16_t u16_at(const Bytes& bytes, size_t offset) { return load_le<uint16_t>(bytes.data() + offset); }

// A scratch folder removed at the end of the test.
class ScratchFolder {
 public:
  ScratchFolder() {
    std::string pattern = (fs::temp_directory_path() / "lamina-acpi-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data()) != nullptr ? fs::path(pattern) : fs::path();
  }
  ~ScratchFolder() {
    std::error_code ignored;
    if (!path_.empty()) fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct CommandResult {
  int status;
  std::string output;
};

CommandResult run(const std::string& command) {
  CommandResult result{-1, {}};
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, got);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

std::string read_text(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Writes a table to a file and disassembles it with ACPICA's iasl; returns the .dsl text.
std::string disassemble(const fs::path& folder, const PlacedTable& table, std::string name) {
  SCOPED_TRACE(name);
  const fs::path binary = folder / (name + ".dat");
  std::ofstream(binary, std::ios::binary)
      .write(reinterpret_cast<const char*>(table.bytes.data()),
             static_cast<std::streamsize>(table.bytes.size()));
  const CommandResult result = run("cd '" + folder.string() + "' && iasl -d '" + binary.string() + "'");
  EXPECT_EQ(result.status, 0) << result.output;
  EXPECT_EQ(result.output.find("Error"), std::string::npos) << result.output;
  return read_text(folder / (name + ".dsl"));
}

TEST(AcpiTables, EveryTableChecksumsToZeroAndTheRsdpFindsThemAll) {
  AcpiConfig config;
  config.cpu_count = 4;
  const AcpiTables tables = build(config);
  ASSERT_FALSE(tables.tables.empty());
  const PlacedTable& rsdp = tables.tables.front();
  ASSERT_EQ(rsdp.bytes.size(), 36u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(rsdp.bytes.data()), 8), "RSD PTR ");
  EXPECT_EQ(rsdp.address % 16, 0u);
  EXPECT_GE(rsdp.address, 0xE0000u);
  EXPECT_LT(rsdp.address, 0x100000u);
  EXPECT_EQ(checksum_of(std::span(rsdp.bytes).first(20)), 0);
  EXPECT_EQ(checksum_of(rsdp.bytes), 0);
  EXPECT_EQ(static_cast<uint8_t>(rsdp.bytes[15]), 2);

  const MemoryLayout layout = layout_of(512 * kMiB);
  for (const PlacedTable& table : tables.tables) {
    SCOPED_TRACE(table.signature);
    if (table.signature == "FACS") {
      EXPECT_EQ(table.address % 64, 0u);  // section 5.2.10
      continue;
    }
    if (table.signature != "RSD PTR ") {
      EXPECT_EQ(checksum_of(table.bytes), 0);
      EXPECT_EQ(u32_at(table.bytes, 4), table.bytes.size());
      // In the area e820 reports as ACPI.
      EXPECT_GE(table.address, layout.acpi_area_base());
      EXPECT_LE(table.address + table.bytes.size(),
                layout.acpi_area_base() + layout.acpi_area_size());
    }
  }
  // The RSDP's XSDT and RSDT list the same tables, each with its signature.
  const PlacedTable* xsdt = tables.find("XSDT");
  const PlacedTable* rsdt = tables.find("RSDT");
  ASSERT_NE(xsdt, nullptr);
  ASSERT_NE(rsdt, nullptr);
  EXPECT_EQ(u64_at(rsdp.bytes, 24), xsdt->address);
  EXPECT_EQ(u32_at(rsdp.bytes, 16), rsdt->address);
  std::vector<std::string> listed;
  for (size_t at = 36; at < xsdt->bytes.size(); at += 8) {
    const uint64_t pointer = u64_at(xsdt->bytes, at);
    EXPECT_EQ(u32_at(rsdt->bytes, 36 + (at - 36) / 2), pointer);
    for (const PlacedTable& table : tables.tables) {
      if (table.address == pointer) listed.push_back(table.signature);
    }
  }
  EXPECT_EQ(listed, (std::vector<std::string>{"FACP", "APIC", "MCFG", "HPET"}));
  // The FADT points at the DSDT (both forms) and the FACS.
  const PlacedTable* fadt = tables.find("FACP");
  ASSERT_NE(fadt, nullptr);
  EXPECT_EQ(u32_at(fadt->bytes, 40), tables.find("DSDT")->address);
  EXPECT_EQ(u64_at(fadt->bytes, 140), tables.find("DSDT")->address);
  EXPECT_EQ(u32_at(fadt->bytes, 36), tables.find("FACS")->address);
}

TEST(AcpiTables, FadtDescribesThePmDeviceAndReset) {
  AcpiConfig config;
  config.pm1a_event_port = 0xB000;
  config.pm1a_control_port = 0xB004;
  config.pm_timer_port = 0xB008;
  config.gpe0_port = 0xAFE0;
  config.gpe0_length = 4;
  const Bytes fadt = build_fadt(config, 0x1234560, 0x1234500);
  ASSERT_EQ(fadt.size(), 276u);
  EXPECT_EQ(static_cast<uint8_t>(fadt[8]), 6);  // revision
  EXPECT_EQ(u16_at(fadt, 46), 9);               // SCI_INT
  EXPECT_EQ(u32_at(fadt, 56), 0xB000u);         // PM1a_EVT_BLK
  EXPECT_EQ(u32_at(fadt, 64), 0xB004u);         // PM1a_CNT_BLK
  EXPECT_EQ(u32_at(fadt, 76), 0xB008u);         // PM_TMR_BLK
  EXPECT_EQ(u32_at(fadt, 80), 0xAFE0u);         // GPE0_BLK
  EXPECT_EQ(static_cast<uint8_t>(fadt[88]), 4);
  EXPECT_EQ(static_cast<uint8_t>(fadt[89]), 2);
  EXPECT_EQ(static_cast<uint8_t>(fadt[91]), 4);
  EXPECT_EQ(static_cast<uint8_t>(fadt[92]), 4);
  const uint32_t flags = u32_at(fadt, 112);
  EXPECT_EQ(flags & kFadtHardwareReduced, 0u);
  EXPECT_NE(flags & kFadtResetRegisterSupported, 0u);
  EXPECT_EQ(flags & kFadtPowerButton, 0u);  // fixed-feature power button present
  // RESET_REG: I/O space, 8 bits, port 0xCF9; RESET_VALUE 6.
  EXPECT_EQ(static_cast<uint8_t>(fadt[116]), 1);
  EXPECT_EQ(static_cast<uint8_t>(fadt[117]), 8);
  EXPECT_EQ(u64_at(fadt, 120), 0xCF9u);
  EXPECT_EQ(static_cast<uint8_t>(fadt[128]), 6);
  // X_PM1a_EVT_BLK, X_PM1a_CNT_BLK, X_PM_TMR_BLK agree with the 32-bit fields.
  EXPECT_EQ(static_cast<uint8_t>(fadt[148]), 1);
  EXPECT_EQ(u64_at(fadt, 152), 0xB000u);
  EXPECT_EQ(u64_at(fadt, 176), 0xB004u);
  EXPECT_EQ(u64_at(fadt, 212), 0xB008u);
  EXPECT_EQ(static_cast<uint8_t>(fadt[209]), 32);
  EXPECT_EQ(u64_at(fadt, 224), 0xAFE0u);
  EXPECT_EQ(checksum_of(fadt), 0);
  // By default there is no GPE0 block: all three forms say so.
  const Bytes plain = build_fadt({}, 0x1234560, 0x1234500);
  EXPECT_EQ(u32_at(plain, 80), 0u);
  EXPECT_EQ(static_cast<uint8_t>(plain[92]), 0);
  EXPECT_EQ(u64_at(plain, 224), 0u);
}

TEST(AcpiTables, MadtListsEveryCpuTheIoApicAndOverrides) {
  AcpiConfig config;
  config.cpu_count = 6;
  auto madt = build_madt(config, kLapicBase, kIoApicBase);
  ASSERT_TRUE(madt.has_value());
  EXPECT_EQ(u32_at(*madt, 36), kLapicBase);
  int cpus = 0;
  int io_apics = 0;
  std::vector<std::pair<int, uint32_t>> overrides;
  int nmis = 0;
  for (size_t at = 44; at < madt->size();) {
    const uint8_t type = static_cast<uint8_t>((*madt)[at]);
    const uint8_t length = static_cast<uint8_t>((*madt)[at + 1]);
    ASSERT_GE(length, 2);
    if (type == 0) {
      EXPECT_EQ(static_cast<uint8_t>((*madt)[at + 3]), cpus);  // APIC ID
      EXPECT_EQ(u32_at(*madt, at + 4) & 1, 1u);                 // enabled
      ++cpus;
    } else if (type == 1) {
      EXPECT_EQ(u32_at(*madt, at + 4), kIoApicBase);
      EXPECT_EQ(u32_at(*madt, at + 8), 0u);
      ++io_apics;
    } else if (type == 2) {
      overrides.emplace_back(static_cast<uint8_t>((*madt)[at + 3]), u32_at(*madt, at + 4));
      if ((*madt)[at + 3] == std::byte{9}) {
        EXPECT_EQ(u16_at(*madt, at + 8), 0x000D);
      }
    } else if (type == 4) {
      EXPECT_EQ(static_cast<uint8_t>((*madt)[at + 5]), 1);  // LINT1
      ++nmis;
    }
    at += length;
  }
  EXPECT_EQ(cpus, 6);
  EXPECT_EQ(io_apics, 1);
  EXPECT_EQ(nmis, 1);
  EXPECT_EQ(overrides, (std::vector<std::pair<int, uint32_t>>{{0, 2}, {9, 9}}));
  config.cpu_count = 0;
  EXPECT_FALSE(build_madt(config, kLapicBase, kIoApicBase).has_value());
  config.cpu_count = 256;
  EXPECT_FALSE(build_madt(config, kLapicBase, kIoApicBase).has_value());
}

TEST(AcpiTables, AmlEncodingsMatchTheSpec) {
  // PkgLength (20.2.4): one byte below 64, then a lead byte with the count of follow bytes.
  EXPECT_EQ(aml::pkg_length(10), (aml::Bytes{std::byte{11}}));
  EXPECT_EQ(aml::pkg_length(62), (aml::Bytes{std::byte{63}}));
  EXPECT_EQ(aml::pkg_length(63), (aml::Bytes{std::byte{0x41}, std::byte{0x04}}));  // 65
  EXPECT_EQ(aml::pkg_length(0x1000), (aml::Bytes{std::byte{0x83}, std::byte{0x00}, std::byte{0x01}}));
  // EisaId("PNP0A03") is the DWord 0x030AD041.
  EXPECT_EQ(aml::eisa_id("PNP0A03"), aml::dword(0x030AD041));
  EXPECT_EQ(aml::integer(0), (aml::Bytes{std::byte{0}}));
  EXPECT_EQ(aml::integer(0x1234), (aml::Bytes{std::byte{0x0B}, std::byte{0x34}, std::byte{0x12}}));
  EXPECT_EQ(aml::name_string("\\_SB.PCI0").size(), 10u);  // '\', DualNamePrefix, 2 x 4
  EXPECT_EQ(aml::name_string("_S5").back(), std::byte{'_'});
  // Method(_STA, 0, NotSerialized) { Return (0x0F) }
  const aml::Bytes sta = aml::method("_STA", 0, {aml::return_value(aml::integer(0x0F))});
  const aml::Bytes expected = {std::byte{0x14}, std::byte{0x09}, std::byte{'_'}, std::byte{'S'},
                               std::byte{'T'},  std::byte{'A'},  std::byte{0x00}, std::byte{0xA4},
                               std::byte{0x0A}, std::byte{0x0F}};
  EXPECT_EQ(sta, expected);
}

TEST(AcpiTables, InstallsIntoGuestRamWhereE820SaysAcpi) {
  const MemoryLayout layout = layout_of(256 * kMiB);
  auto memory = GuestMemory::create(layout.ram_regions());
  ASSERT_TRUE(memory.has_value());
  auto installed = install_acpi_tables(*memory, layout, {});
  ASSERT_TRUE(installed.has_value()) << installed.error().message();
  for (const PlacedTable& table : installed->tables) {
    ASSERT_EQ(std::memcmp(memory->host_pointer(table.address, table.bytes.size()),
                          table.bytes.data(), table.bytes.size()),
              0)
        << table.signature;
  }
  // Without an HPET there is no HPET table and the XSDT lists one table less.
  auto without = build_acpi_tables({.has_hpet = false}, layout, kRsdpAddress,
                                   layout.acpi_area_base(), layout.acpi_area_size());
  ASSERT_TRUE(without.has_value());
  EXPECT_EQ(without->find("HPET"), nullptr);
  EXPECT_EQ(without->find("XSDT")->bytes.size(), 36u + 3 * 8);
  // A 64-bit PCI window overlapping RAM is refused.
  AcpiConfig overlapping;
  overlapping.pci_mmio64_base = 4 * kGiB;
  overlapping.pci_mmio64_size = kGiB;
  auto big = MemoryLayout::create({.ram_size = 8 * kGiB});
  ASSERT_TRUE(big.has_value());
  EXPECT_FALSE(build_acpi_tables(overlapping, *big, kRsdpAddress, big->acpi_area_base(),
                                 big->acpi_area_size())
                   .has_value());
  // Tables that do not fit their area are refused.
  EXPECT_FALSE(build_acpi_tables({}, layout, kRsdpAddress, layout.acpi_area_base(), 512)
                   .has_value());
}

// ACPICA's disassembler (acpica-tools) reads every table back without complaint.
TEST(AcpiTables, IaslDisassemblesEveryTable) {
  if (run("iasl -v").status != 0) GTEST_FAIL() << "iasl missing: install acpica-tools";
  AcpiConfig config;
  config.cpu_count = 2;
  config.pci_mmio64_base = 64 * kGiB;
  config.pci_mmio64_size = 64 * kGiB;
  const AcpiTables tables = build(config);
  ScratchFolder folder;
  ASSERT_FALSE(folder.path().empty());

  const std::string dsdt = disassemble(folder.path(), *tables.find("DSDT"), "dsdt");
  for (const char* expected :
       {"Name (\\_S5, Package (0x04)", "Device (PCI0)", "EisaId (\"PNP0A08\")",
        "EisaId (\"PNP0A03\")", "Device (COM1)", "Device (COM2)", "EisaId (\"PNP0501\")",
        "0x03F8,             // Range Minimum", "IRQNoFlags ()", "{4}", "{3}",
        "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,",
        "0x00FF,             // Range Maximum", "0xFEBFFFFF,         // Range Maximum",
        "QWordMemory", "Name (_PRT, Package (0x80)", "EisaId (\"PNP0C02\")",
        "EisaId (\"PNP0B00\")", "Method (_OSC, 4, NotSerialized)",
        "ToUUID (\"33db4d5b-1ff7-401c-9657-7441c03dd766\")", "0x0070,             // Range Minimum", "{8}",
        "Memory32Fixed (ReadWrite,", "0xB0000000,         // Address Base",
        "0x10000000,         // Address Length"}) {
    EXPECT_NE(dsdt.find(expected), std::string::npos) << expected << "\n" << dsdt;
  }
  const std::string fadt = disassemble(folder.path(), *tables.find("FACP"), "fadt");
  for (const char* expected : {"PM1A Event Block Address : 00000600",
                               "PM1A Control Block Address : 00000604",
                               "PM Timer Block Address : 00000608",
                               "SCI Interrupt : 0009", "Value to cause reset : 06",
                               "Hardware Reduced (V5) : 0"}) {
    EXPECT_NE(fadt.find(expected), std::string::npos) << expected << "\n" << fadt;
  }
  const std::string madt = disassemble(folder.path(), *tables.find("APIC"), "madt");
  EXPECT_NE(madt.find("Local Apic Address : FEE00000"), std::string::npos) << madt;
  EXPECT_NE(madt.find("Address : FEC00000"), std::string::npos) << madt;
  const std::string mcfg = disassemble(folder.path(), *tables.find("MCFG"), "mcfg");
  EXPECT_NE(mcfg.find("Base Address : 00000000B0000000"), std::string::npos) << mcfg;
  const std::string hpet = disassemble(folder.path(), *tables.find("HPET"), "hpet");
  EXPECT_NE(hpet.find("Address : 00000000FED00000"), std::string::npos) << hpet;
  disassemble(folder.path(), *tables.find("XSDT"), "xsdt");
  disassemble(folder.path(), *tables.find("RSDT"), "rsdt");
  disassemble(folder.path(), *tables.find("FACS"), "facs");
  // (iasl 20200925 does not disassemble a lone RSDP; its checksums are tested above.)
}

// ACPICA's AML interpreter (acpiexec) loads the DSDT and evaluates the objects an OS uses.
TEST(AcpiTables, AcpiexecEvaluatesTheDsdt) {
  if (run("acpiexec -v").status != 0) GTEST_FAIL() << "acpiexec missing: install acpica-tools";
  AcpiConfig config;
  config.s5_sleep_type = 5;
  const AcpiTables tables = build(config);
  ScratchFolder folder;
  ASSERT_FALSE(folder.path().empty());
  const PlacedTable& dsdt = *tables.find("DSDT");
  const fs::path file = folder.path() / "dsdt.dat";
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(dsdt.bytes.data()),
             static_cast<std::streamsize>(dsdt.bytes.size()));
  const CommandResult result =
      run("acpiexec -b 'evaluate \\_S5; evaluate \\_SB.PCI0._HID; evaluate \\_SB.PCI0._CID; "
          "evaluate \\_SB.COM2._CRS; evaluate \\_SB.MRES._HID; "
          // _OSC: PCIe UUID asking for 0x3F (LTR too), for 0x1F, and an unknown UUID.
          "evaluate \\_SB.PCI0._OSC (5B 4D DB 33 F7 1F 1C 40 96 57 74 41 C0 3D D7 66) 1 3 "
          "(00 00 00 00 1F 00 00 00 3F 00 00 00); "
          "evaluate \\_SB.PCI0._OSC (5B 4D DB 33 F7 1F 1C 40 96 57 74 41 C0 3D D7 66) 1 3 "
          "(00 00 00 00 1F 00 00 00 1F 00 00 00); "
          "evaluate \\_SB.PCI0._OSC (00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00) 1 3 "
          "(00 00 00 00 1F 00 00 00 1F 00 00 00)' '" + file.string() + "'");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("5 Devices"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[Integer] = 0000000000000005"), std::string::npos) << result.output;
  // EisaId values (6.1.5): PNP0A08, PNP0A03, PNP0C02.
  EXPECT_NE(result.output.find("[Integer] = 00000000080AD041"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[Integer] = 00000000030AD041"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("[Integer] = 00000000020CD041"), std::string::npos) << result.output;
  // COM2: IO 0x2F8-0x2F8 align 1 length 8, IRQ mask bit 3, end tag.
  EXPECT_NE(result.output.find("47 01 F8 02 F8 02 01 08 22 08 00 79 00"), std::string::npos)
      << result.output;
  // _OSC results: LTR masked (capabilities-masked bit 4), all granted, unknown UUID (bit 2).
  EXPECT_NE(result.output.find("0000: 10 00 00 00 1F 00 00 00 1F 00 00 00"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("0000: 00 00 00 00 1F 00 00 00 1F 00 00 00"), std::string::npos)
      << result.output;
  EXPECT_NE(result.output.find("0000: 04 00 00 00 1F 00 00 00 1F 00 00 00"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("AE_"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("Warning"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace lamina::machine::acpi

namespace lamina::machine::acpi {
namespace {

AcpiConfig hotplug_config() {
  AcpiConfig config;
  config.gpe0_port = 0xAFE0;
  config.gpe0_length = 4;
  config.pci_hotplug_port = 0xAE00;
  config.pci_hotplug_slots = 0xFFFFFFFE;  // slots 1-31
  return config;
}

// ACPI PCI hotplug's AML (acpi/pci_hotplug.h) reads back as the ASL it stands for.
TEST(AcpiTables, IaslDisassemblesThePciHotplugAml) {
  if (run("iasl -v").status != 0) GTEST_FAIL() << "iasl missing: install acpica-tools";
  const AcpiTables tables = build(hotplug_config());
  ScratchFolder folder;
  ASSERT_FALSE(folder.path().empty());
  const std::string dsdt = disassemble(folder.path(), *tables.find("DSDT"), "dsdt");
  for (const char* expected :
       {"OperationRegion (PCST, SystemIO, 0xAE00, 0x28)",
        "Field (PCST, DWordAcc, NoLock, WriteAsZeros)", "PCIU,   32", "PCID,   32",
        "B0EJ,   32", "Device (S01)", "Device (S1F)", "Name (_ADR, 0x001F0000)",
        "Name (_SUN, 0x1F)", "Method (_EJ0, 1, NotSerialized)", "B0EJ = 0x80000000",
        "Method (PCNT, 0, Serialized)", "Notify (S1F, 0x03)", "Notify (S01, One)",
        "Scope (\\_GPE)", "Method (_E01, 0, NotSerialized)", "\\_SB.PCI0.PCNT ()"}) {
    EXPECT_NE(dsdt.find(expected), std::string::npos) << expected << "\n" << dsdt;
  }
  EXPECT_EQ(dsdt.find("Device (S00)"), std::string::npos) << "the host bridge is no hotplug slot";
  const std::string fadt = disassemble(folder.path(), *tables.find("FACP"), "fadt");
  EXPECT_NE(fadt.find("GPE0 Block Address : 0000AFE0"), std::string::npos) << fadt;
  EXPECT_NE(fadt.find("GPE0 Block Length : 04"), std::string::npos) << fadt;
}

// acpiexec runs the event method and an eject (its SystemIO handler simulates the ports).
TEST(AcpiTables, AcpiexecRunsThePciHotplugMethods) {
  if (run("acpiexec -v").status != 0) GTEST_FAIL() << "acpiexec missing: install acpica-tools";
  const AcpiTables tables = build(hotplug_config());
  ScratchFolder folder;
  ASSERT_FALSE(folder.path().empty());
  const PlacedTable& dsdt = *tables.find("DSDT");
  const fs::path file = folder.path() / "dsdt.dat";
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(dsdt.bytes.data()),
             static_cast<std::streamsize>(dsdt.bytes.size()));
  const CommandResult result =
      run("acpiexec -b 'evaluate \\_GPE._E01; evaluate \\_SB.PCI0.S05._EJ0 1; "
          "evaluate \\_SB.PCI0.S05._ADR; evaluate \\_SB.PCI0.S05._SUN' '" +
          file.string() + "'");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("[Integer] = 0000000000050000"), std::string::npos)
      << result.output;
  EXPECT_EQ(result.output.find("AE_"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace lamina::machine::acpi

namespace lamina::machine::acpi {
namespace {

AcpiConfig cpu_hotplug_config() {
  AcpiConfig config;
  config.cpu_count = 34;  // vCPUs 32 and 33 use the registers' high dwords
  config.present_cpus = 1;
  config.gpe0_port = 0xAFE0;
  config.gpe0_length = 4;
  config.cpu_hotplug_port = 0xAF00;
  return config;
}

// ACPI CPU hotplug (acpi/cpu_hotplug.h): the MADT lists every possible vCPU, the absent ones
// disabled; the DSDT has a processor device per vCPU with _STA/_MAT/_EJ0 and the event method.
TEST(AcpiTables, IaslDisassemblesTheCpuHotplugAml) {
  if (run("iasl -v").status != 0) GTEST_FAIL() << "iasl missing: install acpica-tools";
  const AcpiTables tables = build(cpu_hotplug_config());
  ScratchFolder folder;
  ASSERT_FALSE(folder.path().empty());
  const std::string dsdt = disassemble(folder.path(), *tables.find("DSDT"), "dsdt");
  for (const char* expected :
       {"OperationRegion (CPST, SystemIO, 0xAF00, 0x28)", "CIN0,   32", "CRM1,   32",
        "CEJ0,   32", "CPR1,   32", "Device (C000)", "Device (C021)",
        "Name (_HID, \"ACPI0007\" /* Processor Device */)", "Method (_STA, 0, NotSerialized)",
        "Method (_MAT, 0, NotSerialized)", "Method (CSCN, 0, Serialized)", "Notify (C021, 0x03)",
        "Method (_E02, 0, NotSerialized)", "\\_SB.CSCN ()", "CEJ1 = 0x02"}) {
    EXPECT_NE(dsdt.find(expected), std::string::npos) << expected << "\n" << dsdt;
  }
  const std::string madt = disassemble(folder.path(), *tables.find("APIC"), "madt");
  EXPECT_NE(madt.find("Processor Enabled : 1"), std::string::npos) << madt;
  EXPECT_NE(madt.find("Processor Enabled : 0"), std::string::npos) << madt;
}

// acpiexec: vCPU 0 is present (_STA 0xF, _MAT enabled), vCPU 5 is not (acpiexec's simulated
// ports read zero); the event method and an eject run without errors.
TEST(AcpiTables, AcpiexecRunsTheCpuHotplugMethods) {
  if (run("acpiexec -v").status != 0) GTEST_FAIL() << "acpiexec missing: install acpica-tools";
  const AcpiTables tables = build(cpu_hotplug_config());
  ScratchFolder folder;
  ASSERT_FALSE(folder.path().empty());
  const PlacedTable& dsdt = *tables.find("DSDT");
  const fs::path file = folder.path() / "dsdt.dat";
  std::ofstream(file, std::ios::binary)
      .write(reinterpret_cast<const char*>(dsdt.bytes.data()),
             static_cast<std::streamsize>(dsdt.bytes.size()));
  const CommandResult result =
      run("acpiexec -b 'evaluate \\_GPE._E02; evaluate \\_SB.C005._STA; evaluate \\_SB.C005._MAT; "
          "evaluate \\_SB.C021._EJ0 1; evaluate \\_SB.C005._UID' '" + file.string() + "'");
  ASSERT_EQ(result.status, 0) << result.output;
  EXPECT_NE(result.output.find("00 08 05 05 00 00 00 00"), std::string::npos) << result.output;
  EXPECT_EQ(result.output.find("AE_"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace lamina::machine::acpi
