#pragma once
// The Root System Description Table (ACPI 6.5, section 5.2.7): the 32-bit pointer list, for
// ACPI 1.0 operating systems; the same tables as the XSDT.

#include <cstdint>
#include <span>

#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

Bytes build_rsdt(std::span<const uint32_t> tables);

}  // namespace lamina::machine::acpi
