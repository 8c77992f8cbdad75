#pragma once
// The Differentiated System Description Table (ACPI 6.5, section 5.2.11.1), revision 2 (64-bit
// integers), in AML emitted by aml.h. It describes:
//  * \_S5_: the soft-off sleep type for poweroff (section 7.4.2);
//  * \_SB.PCI0: the PCI Express host bridge (_HID PNP0A08, _CID PNP0A03), its _CRS (buses
//    0-255, I/O 0-0xCF7 and 0xD00-0xFFFF, the config ports 0xCF8-0xCFF, the VGA window, the
//    32-bit MMIO window and the optional 64-bit one), _PRT (INTx of every slot to GSIs) and
//    _OSC (grants the OS native PCIe hotplug, PME, AER and capability control);
//  * with PCI hotplug (acpi/pci_hotplug.h) its slot objects in PCI0 and a \_GPE method; with
//    CPU hotplug (acpi/cpu_hotplug.h) the processor devices and a \_GPE method;
//  * \_SB.MRES: motherboard resources (PNP0C02) reserving the ECAM window, so an OS can trust
//    MCFG (PCI Firmware spec 3.2, section 4.1.2);
//  * \_SB.RTC_: the CMOS real-time clock (PNP0B00), ports 0x70-0x71, IRQ 8;
//  * \_SB.COMn: the 16550 serial ports (PNP0501) with their I/O range and IRQ.
// The power button is the FADT's fixed-feature button, so it needs no AML.

#include "machine/acpi/config.h"
#include "machine/acpi/table.h"

namespace lamina::machine::acpi {

Bytes build_dsdt(const AcpiConfig& config);

}  // namespace lamina::machine::acpi
