#include "machine/acpi/xsdt.h"

namespace lamina::machine::acpi {

Bytes build_xsdt(std::span<const uint64_t> tables) {
  Table xsdt("XSDT", 1);
  for (uint64_t address : tables) xsdt.u64(address);
  return std::move(xsdt).finish();
}

}  // namespace lamina::machine::acpi
