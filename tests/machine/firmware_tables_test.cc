// The ACPI tables firmware gets over fw_cfg, linked by a small loader written here against
// the command format (SeaBIOS src/fw/romfile_loader.h): every checksum holds after the
// pointers are patched and every pointer lands on the table it names. Also the fw_cfg
// contents a firmware boot gets (e820, SMBIOS anchor).
#include "machine/acpi/firmware_tables.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>

#include "base/byte_order.h"
#include "machine/firmware_config.h"
#include "machine/smbios.h"
#include "machine/table_loader.h"

namespace lamina::machine {
namespace {

using acpi::Bytes;

// Runs a table-loader command file over named blobs placed in one flat "memory".
class TinyLoader {
 public:
  explicit TinyLoader(std::map<std::string, Bytes> files) : files_(std::move(files)) {}

  // Returns false on a command a correct host never emits.
  bool run(const Bytes& commands) {
    if (commands.size() % table_loader::kCommandSize != 0) return false;
    for (size_t at = 0; at < commands.size(); at += table_loader::kCommandSize) {
      const std::byte* command = commands.data() + at;
      const uint32_t kind = load_le<uint32_t>(command);
      const std::byte* body = command + 4;
      if (kind == table_loader::kAllocate) {
        const std::string name = name_at(body);
        const uint32_t alignment = load_le<uint32_t>(body + 56);
        const auto zone = static_cast<uint8_t>(body[60]);
        if (!files_.contains(name) || placed_.contains(name)) return false;
        if (zone != table_loader::kZoneHigh && zone != table_loader::kZoneFseg) return false;
        // FSEG allocations go in 0xF0000-0xFFFFF; HIGH ones at 0x7000000.
        uint64_t& next = zone == table_loader::kZoneFseg ? next_fseg_ : next_high_;
        next = (next + alignment - 1) & ~uint64_t{alignment - 1};
        placed_[name] = next;
        zones_[name] = zone;
        next += files_[name].size();
      } else if (kind == table_loader::kAddPointer) {
        const std::string destination = name_at(body);
        const std::string source = name_at(body + 56);
        const uint32_t offset = load_le<uint32_t>(body + 112);
        const auto size = static_cast<uint8_t>(body[116]);
        if (!placed_.contains(destination) || !placed_.contains(source)) return false;
        Bytes& blob = files_[destination];
        if (offset + size > blob.size()) return false;
        uint64_t value = 0;
        std::memcpy(&value, blob.data() + offset, size);
        value += placed_[source];
        std::memcpy(blob.data() + offset, &value, size);
        ++pointers_;
      } else if (kind == table_loader::kAddChecksum) {
        const std::string name = name_at(body);
        const uint32_t offset = load_le<uint32_t>(body + 56);
        const uint32_t start = load_le<uint32_t>(body + 60);
        const uint32_t length = load_le<uint32_t>(body + 64);
        if (!placed_.contains(name)) return false;
        Bytes& blob = files_[name];
        if (offset >= blob.size() || start + length > blob.size()) return false;
        uint8_t sum = 0;
        for (uint32_t i = start; i < start + length; ++i) sum += static_cast<uint8_t>(blob[i]);
        blob[offset] = std::byte{static_cast<uint8_t>(static_cast<uint8_t>(blob[offset]) - sum)};
      } else {
        return false;
      }
    }
    return true;
  }

  // The byte at a guest address, from whichever placed blob covers it.
  const std::byte* at(uint64_t address, size_t length) const {
    for (const auto& [name, base] : placed_) {
      const Bytes& blob = files_.at(name);
      if (address >= base && address + length <= base + blob.size()) {
        return blob.data() + (address - base);
      }
    }
    return nullptr;
  }
  uint64_t address_of(const std::string& name) const { return placed_.at(name); }
  uint8_t zone_of(const std::string& name) const { return zones_.at(name); }
  int pointers() const { return pointers_; }

 private:
  static std::string name_at(const std::byte* field) {
    const char* text = reinterpret_cast<const char*>(field);
    return std::string(text, strnlen(text, table_loader::kFileNameSize));
  }

  std::map<std::string, Bytes> files_;
  std::map<std::string, uint64_t> placed_;
  std::map<std::string, uint8_t> zones_;
  uint64_t next_high_ = 0x7000000;
  uint64_t next_fseg_ = 0xf0000;
  int pointers_ = 0;
};

uint8_t sum(const std::byte* bytes, size_t length) {
  uint8_t total = 0;
  for (size_t i = 0; i < length; ++i) total += static_cast<uint8_t>(bytes[i]);
  return total;
}

std::string signature_at(const TinyLoader& loader, uint64_t address) {
  const std::byte* header = loader.at(address, 36);
  if (header == nullptr) return "(nothing)";
  return std::string(reinterpret_cast<const char*>(header), 4);
}

void expect_table(const TinyLoader& loader, uint64_t address, std::string_view signature) {
  ASSERT_EQ(signature_at(loader, address), signature) << "at " << std::hex << address;
  const std::byte* header = loader.at(address, 36);
  const uint32_t length = load_le<uint32_t>(header + 4);
  const std::byte* table = loader.at(address, length);
  ASSERT_NE(table, nullptr) << signature << " runs past its blob";
  if (signature != "FACS") {
    EXPECT_EQ(sum(table, length), 0) << signature << " checksum";
  }
}

class FirmwareTablesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto built = MemoryLayout::create({.ram_size = 256 * kMiB});
    ASSERT_TRUE(built);
    layout_ = *built;
    config_.cpu_count = 2;
  }
  std::optional<MemoryLayout> layout_;
  acpi::AcpiConfig config_;
};

TEST_F(FirmwareTablesTest, LoaderLinksEveryTable) {
  auto files = acpi::build_firmware_table_files(config_, *layout_);
  ASSERT_TRUE(files) << files.error().message();
  TinyLoader loader({{acpi::kTablesFile, files->tables}, {acpi::kRsdpFile, files->rsdp}});
  ASSERT_TRUE(loader.run(files->loader));
  EXPECT_EQ(loader.zone_of(acpi::kRsdpFile), table_loader::kZoneFseg);

  const uint64_t rsdp_address = loader.address_of(acpi::kRsdpFile);
  const std::byte* rsdp = loader.at(rsdp_address, 36);
  ASSERT_NE(rsdp, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(rsdp), 8), "RSD PTR ");
  EXPECT_EQ(sum(rsdp, 20), 0) << "ACPI 1.0 checksum";
  EXPECT_EQ(sum(rsdp, 36), 0) << "extended checksum";

  const uint64_t rsdt = load_le<uint32_t>(rsdp + 16);
  const uint64_t xsdt = load_le<uint64_t>(rsdp + 24);
  expect_table(loader, rsdt, "RSDT");
  expect_table(loader, xsdt, "XSDT");
  // The RSDT and XSDT list the same tables, each valid; the FADT leads to FACS and DSDT.
  const std::byte* rsdt_bytes = loader.at(rsdt, 36);
  const uint32_t entries = (load_le<uint32_t>(rsdt_bytes + 4) - 36) / 4;
  ASSERT_GE(entries, 3u);
  const std::byte* xsdt_bytes = loader.at(xsdt, 36 + 8 * entries);
  bool found_fadt = false;
  for (uint32_t i = 0; i < entries; ++i) {
    const uint64_t table = load_le<uint32_t>(rsdt_bytes + 36 + 4 * i);
    EXPECT_EQ(load_le<uint64_t>(xsdt_bytes + 36 + 8 * i), table);
    const std::string signature = signature_at(loader, table);
    expect_table(loader, table, signature);
    if (signature == "FACP") {
      found_fadt = true;
      const std::byte* fadt = loader.at(table, 148);
      expect_table(loader, load_le<uint32_t>(fadt + 36), "FACS");
      expect_table(loader, load_le<uint32_t>(fadt + 40), "DSDT");
      EXPECT_EQ(load_le<uint64_t>(fadt + 140), load_le<uint32_t>(fadt + 40)) << "X_DSDT";
    }
  }
  EXPECT_TRUE(found_fadt);
  EXPECT_GE(loader.pointers(), 2 + 3 + 2 * 3);
}

TEST(TableLoaderTest, RefusesWhatDoesNotFit) {
  TableLoader loader;
  EXPECT_FALSE(loader.allocate(std::string(56, 'x'), 16, table_loader::kZoneHigh));
  EXPECT_FALSE(loader.add_pointer("a", "b", 0, 3));
  EXPECT_FALSE(loader.add_checksum("", 0, 0, 1));
  EXPECT_TRUE(loader.bytes().empty());
  ASSERT_TRUE(loader.add_pointer("a", "b", 8, 4));
  EXPECT_EQ(loader.bytes().size(), table_loader::kCommandSize);
}

TEST_F(FirmwareTablesTest, FirmwareConfigCarriesTheMachine) {
  auto memory = GuestMemory::create({{0, 1 << 20}});
  ASSERT_TRUE(memory);
  DmaMemory dma(*memory);
  hw::FwCfg fw_cfg(dma);
  FirmwareConfigOptions options{.cpus = 2, .max_cpus = 4, .boot_order = {"/pci@i0cf8/*@3"}};
  ASSERT_TRUE(populate_firmware_config(fw_cfg, *layout_, config_, options));
  EXPECT_EQ(load_le<uint16_t>(fw_cfg.item(hw::fw_cfg::kCpuCount).data()), 2);
  EXPECT_EQ(load_le<uint16_t>(fw_cfg.item(hw::fw_cfg::kMaxCpus).data()), 4);
  EXPECT_EQ(load_le<uint64_t>(fw_cfg.item(hw::fw_cfg::kRamSize).data()), 256 * kMiB);
  // The directory names the files; find "etc/e820" and "etc/sercon-port".
  const auto directory = fw_cfg.item(hw::fw_cfg::kFileDirectory);
  const uint32_t count = load_be<uint32_t>(directory.data());
  std::map<std::string, uint16_t> keys;
  for (uint32_t i = 0; i < count; ++i) {
    const std::byte* entry = directory.data() + 4 + 64 * i;
    keys[reinterpret_cast<const char*>(entry + 8)] = load_be<uint16_t>(entry + 4);
  }
  for (const char* name : {"etc/e820", "etc/sercon-port", "etc/boot-fail-wait", "bootorder",
                           "etc/acpi/tables", "etc/acpi/rsdp", "etc/table-loader",
                           "etc/smbios/smbios-tables", "etc/smbios/smbios-anchor"}) {
    EXPECT_TRUE(keys.contains(name)) << name;
  }
  const auto e820 = fw_cfg.item(keys["etc/e820"]);
  ASSERT_EQ(e820.size() % 20, 0u);
  EXPECT_EQ(load_le<uint64_t>(e820.data()), 0u);
  EXPECT_EQ(load_le<uint64_t>(e820.data() + 8), 256 * kMiB);
  EXPECT_EQ(load_le<uint32_t>(e820.data() + 16), 1u);
  EXPECT_EQ(load_le<uint16_t>(fw_cfg.item(keys["etc/sercon-port"]).data()), 0x3f8);
  const auto order = fw_cfg.item(keys["bootorder"]);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(order.data())), "/pci@i0cf8/*@3\n");
}

TEST_F(FirmwareTablesTest, SmbiosStructuresAreWellFormed) {
  auto files = build_smbios_files({.cpus = 3}, *layout_);
  ASSERT_TRUE(files);
  ASSERT_EQ(files->anchor.size(), 0x1fu);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(files->anchor.data()), 4), "_SM_");
  EXPECT_EQ(load_le<uint16_t>(files->anchor.data() + 0x16), files->tables.size());
  // Walk the structures: each formatted area, then strings ending in a double NUL.
  std::vector<uint8_t> types;
  size_t at = 0;
  uint16_t largest = 0;
  while (at < files->tables.size()) {
    const size_t start = at;
    const auto type = static_cast<uint8_t>(files->tables[at]);
    const auto length = static_cast<uint8_t>(files->tables[at + 1]);
    ASSERT_GE(length, 4);
    at += length;
    while (at + 1 < files->tables.size() &&
           !(files->tables[at] == std::byte{0} && files->tables[at + 1] == std::byte{0})) {
      ++at;
    }
    at += 2;
    largest = std::max<uint16_t>(largest, static_cast<uint16_t>(at - start));
    types.push_back(type);
  }
  EXPECT_EQ(at, files->tables.size());
  EXPECT_EQ(load_le<uint16_t>(files->anchor.data() + 0x1c), types.size());
  EXPECT_EQ(load_le<uint16_t>(files->anchor.data() + 8), largest);
  EXPECT_EQ(std::count(types.begin(), types.end(), 4), 3);
  for (uint8_t type : {0, 1, 16, 17, 19, 32, 127}) {
    EXPECT_NE(std::find(types.begin(), types.end(), type), types.end()) << int(type);
  }
  EXPECT_EQ(types.back(), 127);
}

}  // namespace
}  // namespace lamina::machine
