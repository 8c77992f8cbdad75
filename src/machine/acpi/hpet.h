#pragma once
// The "HPET" description table (IA-PC HPET Specification 1.0a, section 3.2.4): the timer
// block's capabilities ID and its MMIO base.

#include <cstdint>

#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

Bytes build_hpet(uint32_t event_timer_block_id, uint64_t base);

}  // namespace lamina::machine::acpi
