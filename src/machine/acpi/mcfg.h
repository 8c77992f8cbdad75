#pragma once
// The PCI Express memory-mapped configuration table "MCFG" (PCI Firmware Specification 3.2,
// section 4.1.2): one allocation for segment 0, buses 0-255, at the ECAM base.

#include <cstdint>

#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

Bytes build_mcfg(uint64_t ecam_base, uint8_t first_bus, uint8_t last_bus);

}  // namespace lamina::machine::acpi
