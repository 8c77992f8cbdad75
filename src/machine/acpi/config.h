#pragma once
// What the ACPI tables describe about the machine: CPU count, the ports of the ACPI PM device,
// interrupt wiring, PCI windows, legacy devices. The machine fills one from its actual device
// models; the defaults are a consistent PC (they follow QEMU's PIIX4/ICH9 PM at 0x600).

#include <cstdint>
#include <vector>

#include "machine/memory_layout.h"

namespace lamina::machine::acpi {

struct SerialPort {
  uint16_t io_base;
  uint8_t irq;
};

struct AcpiConfig {
  uint32_t cpu_count = 1;  // 1..255: xAPIC IDs 0..cpu_count-1, ACPI processor UIDs the same
  // vCPUs present at boot (0: all); the others are listed disabled in the MADT and come and
  // go through ACPI CPU hotplug (hw/hotplug_controller.h, acpi/cpu_hotplug.h) at
  // cpu_hotplug_port (needs gpe0_port), announced by GPE0 bit cpu_hotplug_gpe.
  uint32_t present_cpus = 0;
  uint16_t cpu_hotplug_port = 0;
  uint8_t cpu_hotplug_gpe = 2;

  // ACPI fixed hardware (FADT), all in I/O space.
  uint16_t pm1a_event_port = 0x600;    // PM1a_EVT_BLK, 4 bytes: PM1_STS (16), PM1_EN (16)
  uint16_t pm1a_control_port = 0x604;  // PM1a_CNT_BLK, 2 bytes: SCI_EN bit 0, SLP_TYP 10-12, SLP_EN 13
  uint16_t pm_timer_port = 0x608;      // PM_TMR_BLK, 4 bytes, 32-bit counter at 3.579545 MHz
  // GPE0_BLK (half status, half enable bytes). 0: none, the default: hw::AcpiPm has no GPE
  // block, and a declared block that reads as all ones would look like pending events.
  uint16_t gpe0_port = 0;
  uint8_t gpe0_length = 8;
  uint16_t reset_port = 0xCF9;         // RESET_REG (I/O), written with reset_value
  uint8_t reset_value = 0x06;
  uint8_t sci_irq = 9;                 // ISA IRQ 9, level-triggered, active high (MADT override)
  uint8_t s5_sleep_type = 0;           // SLP_TYP for \_S5 (soft off), as PIIX4/ICH9 use
  uint8_t rtc_century_index = 0x32;    // CMOS register holding the century

  // Interrupt controllers (MADT).
  uint8_t io_apic_id = 0;
  bool has_dual_8259 = true;           // MADT PCAT_COMPAT: legacy PICs present (to be masked)

  // Legacy devices (FADT IAPC_BOOT_ARCH, DSDT).
  bool has_i8042 = false;
  bool has_vga = false;
  std::vector<SerialPort> serial_ports = {{0x3F8, 4}, {0x2F8, 3}};

  // HPET (HPET table, left out when has_hpet is false): the low 32 bits of the device's
  // General Capabilities register.
  // 0x8086A201: vendor 8086, legacy-replacement capable, 64-bit counter, 3 timers, rev 1.
  bool has_hpet = true;
  uint32_t hpet_event_timer_block_id = 0x8086A201;

  // PCI: INTx of slot S pin P (0=INTA) goes to IOAPIC input pci_gsi_base + ((S + P) % 4),
  // level-triggered, active low (the default for PCI interrupts from _PRT).
  uint32_t pci_gsi_base = 16;
  // ACPI PCI hotplug on bus 0 (hw/hotplug_controller.h, acpi/pci_hotplug.h): the register block's
  // I/O port (0: no hotplug), the slots that take it (bit n = slot n) and the GPE0 bit that
  // announces a change (needs gpe0_port).
  uint16_t pci_hotplug_port = 0;
  uint32_t pci_hotplug_slots = 0;
  uint8_t pci_hotplug_gpe = 1;
  // Optional 64-bit MMIO window for the host bridge (0 size: none).
  uint64_t pci_mmio64_base = 0;
  uint64_t pci_mmio64_size = 0;
};

}  // namespace lamina::machine::acpi
