#pragma once
// The AML of ACPI CPU hotplug (hw/hotplug_controller.h is the register block), in the manner
// of QEMU's CPU hotplug (our own layout):
//  * in \_SB: an operation region over the block with fields for the low and high dwords of
//    UP (CIN0/1), DOWN (CRM0/1), EJECT (CEJ0/1) and PRESENT (CPR0/1); one processor device
//    per possible vCPU, Cxxx (_HID ACPI0007, ACPI 6.5 section 8.4; _UID = the MADT's processor
//    UID), whose _STA reads its PRESENT bit (0xF or 0), _MAT returns its MADT Local APIC entry
//    enabled while present (section 6.2.10: Linux maps a hot-added CPU's APIC ID from it) and
//    _EJ0 writes its EJECT bit (not on vCPU 0, which stays); CSCN reads UP and DOWN once and
//    Notify()s each processor named: 1 (Device Check) or 3 (Eject Request);
//  * \_GPE._Enn calling \_SB.CSCN.
// Linux's ACPI processor driver (CONFIG_ACPI_HOTPLUG_CPU) adds the CPU on Device Check (user
// space then onlines it, and the kernel starts it with INIT/SIPI) and on Eject Request takes
// it offline and runs _EJ0.
//
// Pure functions of the config; empty when config.cpu_hotplug_port is 0.

#include <vector>

#include "machine/acpi/aml.h"
#include "machine/acpi/config.h"

namespace lamina::machine::acpi {

// The terms to place inside \_SB.
std::vector<aml::Bytes> cpu_hotplug_objects(const AcpiConfig& config);
// The \_GPE scope with the event method (empty bytes without CPU hotplug).
aml::Bytes cpu_hotplug_gpe_scope(const AcpiConfig& config);

}  // namespace lamina::machine::acpi
