#pragma once
// The Extended System Description Table (ACPI 6.5, section 5.2.8): 64-bit pointers to every
// other table except the DSDT and FACS (which the FADT points at).

#include <cstdint>
#include <span>

#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

Bytes build_xsdt(std::span<const uint64_t> tables);

}  // namespace lamina::machine::acpi
