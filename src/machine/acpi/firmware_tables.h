#pragma once
// Lamina's ACPI tables as firmware receives them over fw_cfg (the way QEMU hands its tables
// to SeaBIOS and OVMF): "etc/acpi/tables" holds every table but the RSDP, laid out from
// offset 0 with each pointer field holding the offset of its target; "etc/acpi/rsdp" holds
// the RSDP with offsets into the tables blob; "etc/table-loader" tells the firmware to place
// both blobs (the RSDP in the 0xF0000 segment, where an OS searches for it), add the real
// addresses to those fields and fix every checksum. The same builder as for direct kernel
// boot produces the tables, so both paths describe one machine.
//
// Stateless functions.

#include "base/error.h"
#include "machine/acpi/config.h"
#include "machine/acpi/table.h"
#include "machine/memory_layout.h"

namespace lamina::machine::acpi {

inline constexpr char kTablesFile[] = "etc/acpi/tables";
inline constexpr char kRsdpFile[] = "etc/acpi/rsdp";
inline constexpr char kTableLoaderFile[] = "etc/table-loader";

struct FirmwareTableFiles {
  Bytes tables;
  Bytes rsdp;
  Bytes loader;
};

Result<FirmwareTableFiles> build_firmware_table_files(const AcpiConfig& config,
                                                      const MemoryLayout& layout);

}  // namespace lamina::machine::acpi
