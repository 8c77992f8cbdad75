#include "machine/acpi/madt.h"

#include <fmt/format.h>

namespace lamina::machine::acpi {

namespace {

// Interrupt Controller Structure types (table 5.21).
constexpr uint8_t kProcessorLocalApic = 0;
constexpr uint8_t kIoApic = 1;
constexpr uint8_t kInterruptSourceOverride = 2;
constexpr uint8_t kLocalApicNmi = 4;

// MPS INTI flags (table 5.26): polarity bits 0-1 (1 high, 3 low), trigger bits 2-3 (1 edge,
// 3 level); 0 means "conforms to the bus".
constexpr uint16_t kActiveHighLevel = 0x1 | (0x3 << 2);

void source_override(Table& madt, uint8_t irq, uint32_t gsi, uint16_t flags) {
  madt.u8(kInterruptSourceOverride);
  madt.u8(10);
  madt.u8(0);  // bus: ISA
  madt.u8(irq);
  madt.u32(gsi);
  madt.u16(flags);
}

}  // namespace

Result<Bytes> build_madt(const AcpiConfig& config, uint64_t lapic_base, uint64_t io_apic_base) {
  if (config.cpu_count == 0 || config.cpu_count > kMaxAcpiCpus) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("{} vCPUs requested; Lamina's ACPI tables describe 1 to {}",
                            config.cpu_count, kMaxAcpiCpus));
  }
  Table madt("APIC", 4);
  madt.u32(static_cast<uint32_t>(lapic_base));
  madt.u32(config.has_dual_8259 ? 1 : 0);  // PCAT_COMPAT
  for (uint32_t cpu = 0; cpu < config.cpu_count; ++cpu) {
    madt.u8(kProcessorLocalApic);
    madt.u8(8);
    madt.u8(static_cast<uint8_t>(cpu));  // ACPI processor UID
    madt.u8(static_cast<uint8_t>(cpu));  // APIC ID
    // Enabled, or (not present yet) 0: Linux counts a disabled entry as a possible CPU that
    // ACPI hotplug may bring (as with QEMU's CPU hotplug).
    const bool present = config.present_cpus == 0 || cpu < config.present_cpus;
    madt.u32(present ? 1 : 0);
  }
  madt.u8(kIoApic);
  madt.u8(12);
  madt.u8(config.io_apic_id);
  madt.u8(0);
  madt.u32(static_cast<uint32_t>(io_apic_base));
  madt.u32(0);  // global system interrupt base
  // The PIT's IRQ0 arrives on IOAPIC input 2 on PCs (section 5.2.12.5).
  source_override(madt, 0, 2, 0);
  source_override(madt, config.sci_irq, config.sci_irq, kActiveHighLevel);
  madt.u8(kLocalApicNmi);
  madt.u8(6);
  madt.u8(0xFF);  // all processors
  madt.u16(0);    // flags: conforms
  madt.u8(1);     // LINT1
  return std::move(madt).finish();
}

}  // namespace lamina::machine::acpi
