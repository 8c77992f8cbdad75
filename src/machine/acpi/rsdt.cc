#include "machine/acpi/rsdt.h"

namespace lamina::machine::acpi {

Bytes build_rsdt(std::span<const uint32_t> tables) {
  Table rsdt("RSDT", 1);
  for (uint32_t address : tables) rsdt.u32(address);
  return std::move(rsdt).finish();
}

}  // namespace lamina::machine::acpi
