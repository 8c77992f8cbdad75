#include "machine/acpi/dsdt.h"

#include <fmt/format.h>

#include "machine/acpi/aml.h"
#include "machine/acpi/cpu_hotplug.h"
#include "machine/acpi/pci_hotplug.h"
#include "machine/memory_layout.h"

namespace lamina::machine::acpi {

namespace {

namespace r = aml::resource;

// _OSC for a PCI Express host bridge (ACPI 6.5 section 6.2.11, PCI Firmware spec 3.2 section
// 4.5): grant the OS what it asks among native hotplug, SHPC hotplug, PME, AER and the PCIe
// capability structure (control bits 0-4); refuse the rest, flagging "capabilities masked"
// (bit 4 of the first DWORD), an unknown revision (bit 3) or an unknown UUID (bit 2).
aml::Bytes pci_osc() {
  const aml::Bytes cdw1 = aml::name_string("CDW1");
  const aml::Bytes cdw3 = aml::name_string("CDW3");
  const aml::Bytes granted = aml::local(0);
  return aml::method(
      "_OSC", 4,
      {
          aml::create_dword_field(aml::arg(3), aml::integer(0), "CDW1"),
          aml::if_then(
              aml::logical_equal(aml::arg(0), aml::uuid("33DB4D5B-1FF7-401C-9657-7441C03DD766")),
              {
                  aml::create_dword_field(aml::arg(3), aml::integer(8), "CDW3"),
                  aml::store(cdw3, granted),
                  aml::bitwise_and(granted, aml::integer(0x1F), granted),
                  aml::if_then(aml::logical_not(aml::logical_equal(aml::arg(1), aml::integer(1))),
                               {aml::bitwise_or(cdw1, aml::integer(0x08), cdw1)}),
                  aml::if_then(aml::logical_not(aml::logical_equal(cdw3, granted)),
                               {aml::bitwise_or(cdw1, aml::integer(0x10), cdw1)}),
                  aml::store(granted, cdw3),
              }),
          aml::else_then({aml::bitwise_or(cdw1, aml::integer(0x04), cdw1)}),
          aml::return_value(aml::arg(3)),
      });
}

aml::Bytes host_bridge(const AcpiConfig& config) {
  std::vector<aml::Bytes> resources = {
      r::word_bus_number(0, 255),
      r::io(0xCF8, 0xCF8, 1, 8),  // configuration address/data ports, consumed by the bridge
      r::word_io(0x0000, 0x0CF7),
      r::word_io(0x0D00, 0xFFFF),
      r::dword_memory(static_cast<uint32_t>(kVgaWindowStart),
                      static_cast<uint32_t>(kBiosAreaStart - 1), true),
      r::dword_memory(static_cast<uint32_t>(kPciMmio32Start),
                      static_cast<uint32_t>(kPciMmio32End - 1), false),
  };
  if (config.pci_mmio64_size > 0) {
    resources.push_back(r::qword_memory(config.pci_mmio64_base,
                                        config.pci_mmio64_base + config.pci_mmio64_size - 1,
                                        false));
  }
  // _PRT (section 6.2.13): {address (slot << 16 | 0xFFFF), pin, source 0, GSI}.
  std::vector<aml::Bytes> routes;
  for (uint32_t slot = 0; slot < 32; ++slot) {
    for (uint32_t pin = 0; pin < 4; ++pin) {
      routes.push_back(aml::package({aml::integer((uint64_t{slot} << 16) | 0xFFFF),
                                     aml::integer(pin), aml::integer(0),
                                     aml::integer(config.pci_gsi_base + (slot + pin) % 4)}));
    }
  }
  std::vector<aml::Bytes> terms = {
      aml::name("_HID", aml::eisa_id("PNP0A08")),
      aml::name("_CID", aml::eisa_id("PNP0A03")),
      aml::name("_ADR", aml::integer(0)),
      aml::name("_UID", aml::integer(0)),
      aml::name("_SEG", aml::integer(0)),
      aml::name("_BBN", aml::integer(0)),
      aml::name("_CRS", aml::resource_template(resources)),
      aml::name("_PRT", aml::package(routes)),
      pci_osc(),
  };
  for (aml::Bytes& slot : pci_hotplug_slots(config)) terms.push_back(std::move(slot));
  return aml::device("PCI0", terms);
}

aml::Bytes motherboard_resources() {
  return aml::device(
      "MRES", {
                  aml::name("_HID", aml::eisa_id("PNP0C02")),
                  aml::name("_UID", aml::integer(1)),
                  aml::name("_CRS", aml::resource_template({r::memory32_fixed(
                                        static_cast<uint32_t>(kEcamBase),
                                        static_cast<uint32_t>(kEcamSize), true)})),
              });
}

// The CMOS RTC (PNP0B00) at ports 0x70-0x71 with ISA IRQ 8, so the OS binds rtc_cmos to it.
aml::Bytes rtc() {
  return aml::device("RTC", {
                                aml::name("_HID", aml::eisa_id("PNP0B00")),
                                aml::name("_CRS", aml::resource_template(
                                                      {r::io(0x70, 0x70, 1, 2),
                                                       r::irq_no_flags(8)})),
                            });
}

// The PS/2 keyboard (PNP0303, the i8042's ports 0x60 and 0x64 with IRQ 1) and mouse (PNP0F13,
// IRQ 12). SeaBIOS sets up its keyboard only when the DSDT has PNP0303 (src/hw/ps2port.c).
std::vector<aml::Bytes> ps2_devices() {
  return {
      aml::device("KBD", {
                             aml::name("_HID", aml::eisa_id("PNP0303")),
                             aml::name("_STA", aml::integer(0x0F)),
                             aml::name("_CRS", aml::resource_template(
                                                   {r::io(0x60, 0x60, 1, 1), r::io(0x64, 0x64, 1, 1),
                                                    r::irq_no_flags(1)})),
                         }),
      aml::device("MOU", {
                             aml::name("_HID", aml::eisa_id("PNP0F13")),
                             aml::name("_STA", aml::integer(0x0F)),
                             aml::name("_CRS", aml::resource_template({r::irq_no_flags(12)})),
                         }),
  };
}

aml::Bytes serial_port(size_t index, const SerialPort& port) {
  return aml::device(fmt::format("COM{}", index + 1),
                     {
                         aml::name("_HID", aml::eisa_id("PNP0501")),
                         aml::name("_UID", aml::integer(index + 1)),
                         aml::name("_STA", aml::integer(0x0F)),  // present, enabled, shown, works
                         aml::name("_CRS", aml::resource_template(
                                               {r::io(port.io_base, port.io_base, 1, 8),
                                                r::irq_no_flags(port.irq)})),
                     });
}

}  // namespace

Bytes build_dsdt(const AcpiConfig& config) {
  std::vector<aml::Bytes> system_bus = {host_bridge(config), motherboard_resources(), rtc()};
  for (size_t i = 0; i < config.serial_ports.size(); ++i) {
    system_bus.push_back(serial_port(i, config.serial_ports[i]));
  }
  if (config.has_i8042) {
    for (aml::Bytes& device : ps2_devices()) system_bus.push_back(std::move(device));
  }
  for (aml::Bytes& term : cpu_hotplug_objects(config)) system_bus.push_back(std::move(term));
  // \_S5_: Package {SLP_TYPa, SLP_TYPb, reserved, reserved} (section 7.4.2).
  const aml::Bytes s5 = aml::name(
      "\\_S5", aml::package({aml::integer(config.s5_sleep_type),
                             aml::integer(config.s5_sleep_type), aml::integer(0),
                             aml::integer(0)}));
  Table dsdt("DSDT", 2);
  dsdt.append(s5);
  dsdt.append(aml::scope("\\_SB", system_bus));
  if (config.pci_hotplug_port != 0) dsdt.append(pci_hotplug_gpe_scope(config));
  if (config.cpu_hotplug_port != 0) dsdt.append(cpu_hotplug_gpe_scope(config));
  return std::move(dsdt).finish();
}

}  // namespace lamina::machine::acpi
