#include "machine/acpi/pci_hotplug.h"

#include <fmt/format.h>

#include "hw/hotplug_controller.h"

namespace lamina::machine::acpi {

namespace {

std::string slot_name(unsigned slot) { return fmt::format("S{:02X}", slot); }

aml::Bytes slot_device(unsigned slot) {
  return aml::device(
      slot_name(slot),
      {
          aml::name("_ADR", aml::integer(uint64_t{slot} << 16)),
          aml::name("_SUN", aml::integer(slot)),
          // _EJ0(Arg0 = 1): the OS has released the slot's function.
          aml::method("_EJ0", 1, {aml::store(aml::integer(uint64_t{1} << slot),
                                             aml::name_string("B0EJ"))}),
      });
}

}  // namespace

std::vector<aml::Bytes> pci_hotplug_slots(const AcpiConfig& config) {
  if (config.pci_hotplug_port == 0) return {};
  std::vector<aml::Bytes> terms;
  using Registers = hw::HotplugController;
  terms.push_back(aml::system_io_region("PCST", config.pci_hotplug_port,
                                        static_cast<uint16_t>(Registers::kSize)));
  // The low dwords of UP, DOWN and EJECT: slots are 0-31.
  static_assert(Registers::kUp == 0 && Registers::kDown == 8 && Registers::kEject == 16);
  terms.push_back(aml::dword_field("PCST", {{"PCIU", 32}, {"", 32}, {"PCID", 32}, {"", 32},
                                            {"B0EJ", 32}}));
  // PCNT reads each register once (reading clears it), then notifies slot by slot.
  const aml::Bytes up = aml::local(0);
  const aml::Bytes down = aml::local(1);
  std::vector<aml::Bytes> body = {aml::store(aml::name_string("PCIU"), up),
                                  aml::store(aml::name_string("PCID"), down)};
  for (unsigned slot = 0; slot < 32; ++slot) {
    if (!(config.pci_hotplug_slots & (uint32_t{1} << slot))) continue;
    terms.push_back(slot_device(slot));
    const aml::Bytes mask = aml::integer(uint64_t{1} << slot);
    body.push_back(aml::if_then(aml::bitwise_and(up, mask, aml::no_target()),
                                {aml::notify(slot_name(slot), aml::integer(1))}));
    body.push_back(aml::if_then(aml::bitwise_and(down, mask, aml::no_target()),
                                {aml::notify(slot_name(slot), aml::integer(3))}));
  }
  terms.push_back(aml::serialized_method("PCNT", 0, body));
  return terms;
}

aml::Bytes pci_hotplug_gpe_scope(const AcpiConfig& config) {
  if (config.pci_hotplug_port == 0) return {};
  return aml::scope("\\_GPE", {aml::method(fmt::format("_E{:02X}", config.pci_hotplug_gpe), 0,
                                           {aml::call("\\_SB.PCI0.PCNT")})});
}

}  // namespace lamina::machine::acpi
