#pragma once
// The Fixed ACPI Description Table "FACP" (ACPI 6.5, section 5.2.9), revision 6 (ACPI 6.0
// layout, 276 bytes): a full (not hardware-reduced) PC with PM1a event/control blocks, the PM
// timer, an optional GPE0 block, the reset register, SCI on an ISA IRQ, the fixed-feature power
// button, and both the 32-bit and X_ 64-bit forms of every block address.

#include <cstdint>

#include "machine/acpi/config.h"
#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

inline constexpr size_t kFadtSize = 276;

// FADT flags (table 5.10) that Lamina sets or tests.
inline constexpr uint32_t kFadtWbinvd = 1 << 0;
inline constexpr uint32_t kFadtProcC1 = 1 << 2;
inline constexpr uint32_t kFadtPowerButton = 1 << 4;  // set = no fixed-feature power button
inline constexpr uint32_t kFadtSleepButton = 1 << 5;  // set = no fixed-feature sleep button
inline constexpr uint32_t kFadtTimerValueExtended = 1 << 8;  // 32-bit PM timer
inline constexpr uint32_t kFadtResetRegisterSupported = 1 << 10;
inline constexpr uint32_t kFadtHardwareReduced = 1 << 20;

Bytes build_fadt(const AcpiConfig& config, uint64_t dsdt_address, uint64_t facs_address);

}  // namespace lamina::machine::acpi
