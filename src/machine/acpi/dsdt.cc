#include "machine/acpi/dsdt.h"

#include <fmt/format.h>

#include "machine/acpi/aml.h"
#include "machine/memory_layout.h"

namespace lamina::machine::acpi {

namespace {

namespace r = aml::resource;

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
  return aml::device("PCI0", {
                                 aml::name("_HID", aml::eisa_id("PNP0A08")),
                                 aml::name("_CID", aml::eisa_id("PNP0A03")),
                                 aml::name("_ADR", aml::integer(0)),
                                 aml::name("_UID", aml::integer(0)),
                                 aml::name("_SEG", aml::integer(0)),
                                 aml::name("_BBN", aml::integer(0)),
                                 aml::name("_CRS", aml::resource_template(resources)),
                                 aml::name("_PRT", aml::package(routes)),
                             });
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
  // \_S5_: Package {SLP_TYPa, SLP_TYPb, reserved, reserved} (section 7.4.2).
  const aml::Bytes s5 = aml::name(
      "\\_S5", aml::package({aml::integer(config.s5_sleep_type),
                             aml::integer(config.s5_sleep_type), aml::integer(0),
                             aml::integer(0)}));
  Table dsdt("DSDT", 2);
  dsdt.append(s5);
  dsdt.append(aml::scope("\\_SB", system_bus));
  return std::move(dsdt).finish();
}

}  // namespace lamina::machine::acpi
