#include "machine/acpi/acpi_tables.h"

#include <fmt/format.h>

#include "machine/acpi/dsdt.h"
#include "machine/acpi/facs.h"
#include "machine/acpi/fadt.h"
#include "machine/acpi/hpet.h"
#include "machine/acpi/madt.h"
#include "machine/acpi/mcfg.h"
#include "machine/acpi/rsdp.h"
#include "machine/acpi/rsdt.h"
#include "machine/acpi/xsdt.h"

namespace lamina::machine::acpi {

namespace {

// Hands out addresses in the ACPI area; tables are 16-byte aligned, the FACS 64-byte aligned.
class Packer {
 public:
  Packer(uint64_t base, uint64_t size) : next_(base), end_(base + size) {}
  uint64_t next(uint64_t alignment) const { return (next_ + alignment - 1) & ~(alignment - 1); }
  Result<uint64_t> place(uint64_t size, uint64_t alignment = 16) {
    const uint64_t address = next(alignment);
    if (address > end_ || size > end_ - address) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("ACPI tables do not fit in their {}-byte area", end_ - next_));
    }
    next_ = address + size;
    return address;
  }

 private:
  uint64_t next_;
  uint64_t end_;
};

}  // namespace

const PlacedTable* AcpiTables::find(std::string_view signature) const {
  for (const PlacedTable& table : tables) {
    if (table.signature == signature) return &table;
  }
  return nullptr;
}

Result<AcpiTables> build_acpi_tables(const AcpiConfig& config, const MemoryLayout& layout,
                                     uint64_t rsdp_address, uint64_t area_base,
                                     uint64_t area_size) {
  if (config.pci_mmio64_size > 0) {
    const uint64_t ram_top = kAbove4GiBStart + layout.above_4g_ram_size();
    if (config.pci_mmio64_base < ram_top ||
        config.pci_mmio64_base + config.pci_mmio64_size < config.pci_mmio64_base) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("64-bit PCI window at {:#x} overlaps RAM (which ends at {:#x})",
                              config.pci_mmio64_base, ram_top));
    }
  }
  auto madt = build_madt(config, kLapicBase, kIoApicBase);
  if (!madt) return fail(madt.error());

  AcpiTables result;
  result.rsdp_address = rsdp_address;
  Packer packer(area_base, area_size);
  auto add = [&](std::string signature, Bytes bytes, uint64_t alignment) -> Result<uint64_t> {
    auto address = packer.place(bytes.size(), alignment);
    if (!address) return fail(address.error());
    result.tables.push_back({std::move(signature), *address, std::move(bytes)});
    return *address;
  };
  // Placeholder for the RSDP so it stays first; filled in at the end.
  result.tables.push_back({"RSD PTR ", rsdp_address, {}});

  auto facs = add("FACS", build_facs(), 64);
  if (!facs) return fail(facs.error());
  auto dsdt = add("DSDT", build_dsdt(config), 16);
  if (!dsdt) return fail(dsdt.error());
  auto fadt = add("FACP", build_fadt(config, *dsdt, *facs), 16);
  if (!fadt) return fail(fadt.error());
  auto madt_address = add("APIC", std::move(*madt), 16);
  if (!madt_address) return fail(madt_address.error());
  auto mcfg = add("MCFG", build_mcfg(kEcamBase, 0, static_cast<uint8_t>(kEcamSize / kMiB - 1)), 16);
  if (!mcfg) return fail(mcfg.error());
  std::vector<uint64_t> pointers = {*fadt, *madt_address, *mcfg};
  if (config.has_hpet) {
    auto hpet = add("HPET", build_hpet(config.hpet_event_timer_block_id, kHpetBase), 16);
    if (!hpet) return fail(hpet.error());
    pointers.push_back(*hpet);
  }

  std::vector<uint32_t> pointers32;
  for (uint64_t pointer : pointers) pointers32.push_back(static_cast<uint32_t>(pointer));
  auto rsdt = add("RSDT", build_rsdt(pointers32), 16);
  if (!rsdt) return fail(rsdt.error());
  auto xsdt = add("XSDT", build_xsdt(pointers), 16);
  if (!xsdt) return fail(xsdt.error());
  result.tables.front().bytes = build_rsdp(static_cast<uint32_t>(*rsdt), *xsdt);
  return result;
}

Result<AcpiTables> install_acpi_tables(GuestMemory& memory, const MemoryLayout& layout,
                                       const AcpiConfig& config) {
  auto tables = build_acpi_tables(config, layout, kRsdpAddress, layout.acpi_area_base(),
                                  layout.acpi_area_size());
  if (!tables) return fail(tables.error());
  for (const PlacedTable& table : tables->tables) {
    if (auto written = memory.write(table.address, table.bytes); !written) {
      return fail(written.error().with_context(fmt::format("ACPI {}", table.signature)));
    }
  }
  return tables;
}

}  // namespace lamina::machine::acpi
