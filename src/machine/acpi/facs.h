#pragma once
// The Firmware ACPI Control Structure (ACPI 6.5, section 5.2.10): required when the platform is
// not hardware-reduced; holds the waking vector and the global lock. 64 bytes, 64-byte aligned,
// no checksum.

#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

inline constexpr size_t kFacsSize = 64;

Bytes build_facs();

}  // namespace lamina::machine::acpi
