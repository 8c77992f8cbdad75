#include "machine/firmware_config.h"

#include <cstring>

#include "base/byte_order.h"
#include "machine/acpi/firmware_tables.h"
#include "machine/smbios.h"

namespace lamina::machine {

namespace {
template <typename T>
std::vector<std::byte> little_endian(T value) {
  std::vector<std::byte> bytes(sizeof(T));
  store_le<T>(bytes.data(), value);
  return bytes;
}

Result<void> add_file(hw::FwCfg& fw_cfg, std::string_view name, std::vector<std::byte> data) {
  auto added = fw_cfg.add_file(name, std::move(data));
  if (!added) return fail(added.error());
  return {};
}
}  // namespace

std::vector<E820Entry> firmware_e820(const MemoryLayout& layout) {
  std::vector<E820Entry> map = {{0, layout.below_4g_ram_end(), E820Type::kUsable}};
  for (const E820Entry& entry : layout.e820()) {
    if (entry.address >= kPciHoleStart && entry.address < kFourGiB) map.push_back(entry);
  }
  if (layout.above_4g_ram_size() > 0) {
    map.push_back({kAbove4GiBStart, layout.above_4g_ram_size(), E820Type::kUsable});
  }
  return map;
}

Result<void> populate_firmware_config(hw::FwCfg& fw_cfg, const MemoryLayout& layout,
                                      const acpi::AcpiConfig& acpi_config,
                                      const FirmwareConfigOptions& options) {
  // Legacy items (fw_cfg.rst, "Selector Register"); every value is little-endian.
  struct Item {
    uint16_t key;
    std::vector<std::byte> data;
  };
  std::vector<Item> items;
  items.push_back({hw::fw_cfg::kRamSize, little_endian<uint64_t>(layout.ram_size())});
  items.push_back({hw::fw_cfg::kCpuCount, little_endian<uint16_t>(static_cast<uint16_t>(options.cpus))});
  items.push_back(
      {hw::fw_cfg::kMaxCpus, little_endian<uint16_t>(static_cast<uint16_t>(options.max_cpus))});
  for (Item& item : items) {
    if (auto added = fw_cfg.add_item(item.key, std::move(item.data)); !added) return added;
  }

  // "etc/e820": packed { le64 address; le64 length; le32 type; } (SeaBIOS paravirt.c).
  const std::vector<E820Entry> map = firmware_e820(layout);
  std::vector<std::byte> e820(map.size() * 20);
  for (size_t index = 0; index < map.size(); ++index) {
    std::byte* entry = e820.data() + index * 20;
    store_le<uint64_t>(entry, map[index].address);
    store_le<uint64_t>(entry + 8, map[index].size);
    store_le<uint32_t>(entry + 16, static_cast<uint32_t>(map[index].type));
  }
  if (auto added = add_file(fw_cfg, "etc/e820", std::move(e820)); !added) return added;
  if (layout.hotplug_size() > 0) {
    // 64-bit BARs go above the virtio-mem region, not into it.
    if (auto added = add_file(fw_cfg, "etc/reserved-memory-end",
                              little_endian<uint64_t>(layout.hotplug_base() + layout.hotplug_size()));
        !added) {
      return added;
    }
  }

  if (auto added = add_file(fw_cfg, "etc/boot-fail-wait",
                            little_endian<uint32_t>(options.boot_fail_wait_ms));
      !added) {
    return added;
  }
  if (options.serial_console_port != 0) {
    if (auto added = add_file(fw_cfg, "etc/sercon-port",
                              little_endian<uint16_t>(options.serial_console_port));
        !added) {
      return added;
    }
  }
  // "bootorder": one device path per line, NUL-terminated.
  std::string order;
  for (const std::string& path : options.boot_order) order += path + "\n";
  std::vector<std::byte> order_bytes(order.size() + 1);
  std::memcpy(order_bytes.data(), order.data(), order.size());
  if (auto added = add_file(fw_cfg, "bootorder", std::move(order_bytes)); !added) return added;

  auto tables = acpi::build_firmware_table_files(acpi_config, layout);
  if (!tables) return fail(tables.error().with_context("ACPI tables"));
  if (auto added = add_file(fw_cfg, acpi::kTablesFile, std::move(tables->tables)); !added) return added;
  if (auto added = add_file(fw_cfg, acpi::kRsdpFile, std::move(tables->rsdp)); !added) return added;
  if (auto added = add_file(fw_cfg, acpi::kTableLoaderFile, std::move(tables->loader)); !added) {
    return added;
  }

  auto smbios = build_smbios_files(SmbiosConfig{.cpus = options.cpus}, layout);
  if (!smbios) return fail(smbios.error());
  if (auto added = add_file(fw_cfg, kSmbiosTablesFile, std::move(smbios->tables)); !added) {
    return added;
  }
  return add_file(fw_cfg, kSmbiosAnchorFile, std::move(smbios->anchor));
}

}  // namespace lamina::machine
