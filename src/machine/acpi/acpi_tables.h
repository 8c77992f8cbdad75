#pragma once
// Builds the whole set of ACPI tables for a machine and places them in guest RAM: the FACS,
// DSDT, FADT, MADT, MCFG, HPET, RSDT and XSDT in the layout's ACPI area (reported as ACPI in
// e820), and the RSDP at 0xE0000, where an OS searching the BIOS area finds it (ACPI 6.5,
// section 5.2.5.1); its address also goes to Linux through boot_params.acpi_rsdp_addr.
//
// Stateless functions; the caller owns the guest memory.

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"
#include "machine/acpi/config.h"
#include "machine/acpi/table.h"
#include "machine/memory_layout.h"

namespace lamina::machine::acpi {

inline constexpr uint64_t kRsdpAddress = kBiosSystemAreaStart;

struct PlacedTable {
  std::string signature;  // "RSD PTR " for the RSDP, else the table's 4-byte signature
  uint64_t address;
  Bytes bytes;
};

struct AcpiTables {
  uint64_t rsdp_address = 0;
  std::vector<PlacedTable> tables;  // every table, RSDP first

  const PlacedTable* find(std::string_view signature) const;
};

// Builds the tables with their final addresses: the RSDP at rsdp_address and the rest packed
// from area_base. kInvalidArgument when the configuration is inconsistent (CPU count, a
// 64-bit PCI window overlapping RAM) or the tables do not fit in area_size.
Result<AcpiTables> build_acpi_tables(const AcpiConfig& config, const MemoryLayout& layout,
                                     uint64_t rsdp_address, uint64_t area_base,
                                     uint64_t area_size);

// Builds the tables for the layout's ACPI area and writes them into guest memory.
Result<AcpiTables> install_acpi_tables(GuestMemory& memory, const MemoryLayout& layout,
                                       const AcpiConfig& config);

}  // namespace lamina::machine::acpi
