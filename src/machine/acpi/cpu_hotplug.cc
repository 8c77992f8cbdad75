#include "machine/acpi/cpu_hotplug.h"

#include <fmt/format.h>

#include "hw/hotplug_controller.h"

namespace lamina::machine::acpi {

namespace {

std::string processor_name(uint32_t cpu) { return fmt::format("C{:03X}", cpu); }

// The field holding vCPU `cpu`'s bit of a register ("CPR" -> CPR0 or CPR1) and its mask.
aml::Bytes field_of(std::string_view stem, uint32_t cpu) {
  return aml::name_string(fmt::format("{}{}", stem, cpu / 32));
}
aml::Bytes mask_of(uint32_t cpu) { return aml::integer(uint64_t{1} << (cpu % 32)); }

// The MADT Processor Local APIC structure (section 5.2.12.2) for `cpu`.
aml::Bytes local_apic_entry(uint32_t cpu, bool enabled) {
  return aml::buffer({std::byte{0}, std::byte{8}, std::byte{static_cast<uint8_t>(cpu)},
                      std::byte{static_cast<uint8_t>(cpu)}, std::byte{enabled ? uint8_t{1} : uint8_t{0}},
                      std::byte{0}, std::byte{0}, std::byte{0}});
}

aml::Bytes processor(uint32_t cpu) {
  const aml::Bytes present = aml::bitwise_and(field_of("CPR", cpu), mask_of(cpu), aml::no_target());
  std::vector<aml::Bytes> terms = {
      aml::name("_HID", aml::string("ACPI0007")),
      aml::name("_UID", aml::integer(cpu)),
      aml::method("_STA", 0,
                  {aml::if_then(present, {aml::return_value(aml::integer(0x0F))}),
                   aml::return_value(aml::integer(0))}),
      aml::method("_MAT", 0,
                  {aml::if_then(present, {aml::return_value(local_apic_entry(cpu, true))}),
                   aml::return_value(local_apic_entry(cpu, false))}),
  };
  // vCPU 0 starts the machine and never leaves it.
  if (cpu != 0) {
    terms.push_back(aml::method("_EJ0", 1, {aml::store(mask_of(cpu), field_of("CEJ", cpu))}));
  }
  return aml::device(processor_name(cpu), terms);
}

}  // namespace

std::vector<aml::Bytes> cpu_hotplug_objects(const AcpiConfig& config) {
  if (config.cpu_hotplug_port == 0) return {};
  using Registers = hw::HotplugController;
  static_assert(Registers::kUp == 0x00 && Registers::kDown == 0x08 && Registers::kEject == 0x10 &&
                Registers::kUnits == 0x18 && Registers::kPresent == 0x20);
  std::vector<aml::Bytes> terms;
  terms.push_back(aml::system_io_region("CPST", config.cpu_hotplug_port,
                                        static_cast<uint16_t>(Registers::kSize)));
  terms.push_back(aml::dword_field("CPST", {{"CIN0", 32}, {"CIN1", 32}, {"CRM0", 32},
                                            {"CRM1", 32}, {"CEJ0", 32}, {"CEJ1", 32},
                                            {"", 32}, {"", 32}, {"CPR0", 32}, {"CPR1", 32}}));
  // CSCN reads each register once (reading clears it), then notifies processor by processor.
  std::vector<aml::Bytes> body = {
      aml::store(aml::name_string("CIN0"), aml::local(0)),
      aml::store(aml::name_string("CIN1"), aml::local(1)),
      aml::store(aml::name_string("CRM0"), aml::local(2)),
      aml::store(aml::name_string("CRM1"), aml::local(3)),
  };
  for (uint32_t cpu = 0; cpu < config.cpu_count && cpu < 64; ++cpu) {
    terms.push_back(processor(cpu));
    const uint8_t half = static_cast<uint8_t>(cpu / 32);
    body.push_back(aml::if_then(aml::bitwise_and(aml::local(half), mask_of(cpu), aml::no_target()),
                                {aml::notify(processor_name(cpu), aml::integer(1))}));
    body.push_back(
        aml::if_then(aml::bitwise_and(aml::local(2 + half), mask_of(cpu), aml::no_target()),
                     {aml::notify(processor_name(cpu), aml::integer(3))}));
  }
  terms.push_back(aml::serialized_method("CSCN", 0, body));
  return terms;
}

aml::Bytes cpu_hotplug_gpe_scope(const AcpiConfig& config) {
  if (config.cpu_hotplug_port == 0) return {};
  return aml::scope("\\_GPE", {aml::method(fmt::format("_E{:02X}", config.cpu_hotplug_gpe), 0,
                                           {aml::call("\\_SB.CSCN")})});
}

}  // namespace lamina::machine::acpi
