#include "machine/acpi/mcfg.h"

namespace lamina::machine::acpi {

Bytes build_mcfg(uint64_t ecam_base, uint8_t first_bus, uint8_t last_bus) {
  Table mcfg("MCFG", 1);
  mcfg.u64(0);  // reserved
  mcfg.u64(ecam_base);
  mcfg.u16(0);  // PCI segment group
  mcfg.u8(first_bus);
  mcfg.u8(last_bus);
  mcfg.u32(0);  // reserved
  return std::move(mcfg).finish();
}

}  // namespace lamina::machine::acpi
