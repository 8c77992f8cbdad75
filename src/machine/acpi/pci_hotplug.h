#pragma once
// The AML of ACPI PCI hotplug on the root bus (hw/hotplug_controller.h is the register block):
//  * in \_SB.PCI0: an operation region over the block with fields PCIU, PCID, B0EJ; one
//    device object per hotplug slot, Sxx, with _ADR (slot << 16), _SUN (the slot number, which
//    Linux's acpiphp names the slot after) and _EJ0 (ACPI 6.5 section 6.3.3: the OS has let
//    the device go; it writes the slot's bit to B0EJ); and PCNT, which reads UP and DOWN once
//    and Notify()s each slot they name: 1 (Device Check: look at the slot) or 3 (Eject
//    Request) (section 5.6.6);
//  * \_GPE._Enn (section 5.6.4.1: an edge-triggered GPE's method) calling \_SB.PCI0.PCNT.
// Linux's acpiphp (drivers/pci/hotplug/acpiphp_glue.c) binds to such slots on the root bus,
// rescans the slot on Device Check and on Eject Request removes the function, then runs _EJ0.
//
// Pure functions of the config; empty when config.pci_hotplug_port is 0.

#include <vector>

#include "machine/acpi/aml.h"
#include "machine/acpi/config.h"

namespace lamina::machine::acpi {

// The terms to place inside \_SB.PCI0.
std::vector<aml::Bytes> pci_hotplug_slots(const AcpiConfig& config);
// The \_GPE scope with the event method (empty bytes without hotplug).
aml::Bytes pci_hotplug_gpe_scope(const AcpiConfig& config);

}  // namespace lamina::machine::acpi
