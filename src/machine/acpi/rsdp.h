#pragma once
// The Root System Description Pointer (ACPI 6.5, section 5.2.5.3), revision 2: points at the
// RSDT and the XSDT, with the ACPI 1.0 checksum over its first 20 bytes and the extended
// checksum over all 36.

#include <cstdint>

#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

inline constexpr size_t kRsdpSize = 36;

Bytes build_rsdp(uint32_t rsdt_address, uint64_t xsdt_address);

}  // namespace lamina::machine::acpi
