#pragma once
// The Multiple APIC Description Table "APIC" (ACPI 6.5, section 5.2.12): one Processor Local
// APIC entry per vCPU, the I/O APIC, the ISA interrupt source overrides (IRQ0 -> GSI2 for the
// PIT, the SCI level-triggered active-high) and the local APIC NMI on LINT1 of every CPU.

#include <cstdint>

#include "base/error.h"
#include "machine/acpi/config.h"
#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

inline constexpr uint32_t kMaxAcpiCpus = 255;  // xAPIC IDs 0..254; 255 is the broadcast ID

// kInvalidArgument when cpu_count is 0 or above kMaxAcpiCpus.
Result<Bytes> build_madt(const AcpiConfig& config, uint64_t lapic_base, uint64_t io_apic_base);

}  // namespace lamina::machine::acpi
