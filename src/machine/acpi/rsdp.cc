#include "machine/acpi/rsdp.h"

#include <cstring>

#include "base/byte_order.h"

namespace lamina::machine::acpi {

Bytes build_rsdp(uint32_t rsdt_address, uint64_t xsdt_address) {
  Bytes rsdp(kRsdpSize);
  std::memcpy(rsdp.data(), "RSD PTR ", 8);
  std::memcpy(rsdp.data() + 9, kOemId, 6);
  rsdp[15] = std::byte{2};  // revision: ACPI 2.0+
  store_le<uint32_t>(rsdp.data() + 16, rsdt_address);
  store_le<uint32_t>(rsdp.data() + 20, kRsdpSize);
  store_le<uint64_t>(rsdp.data() + 24, xsdt_address);
  rsdp[8] = std::byte{balancing_checksum(std::span(rsdp).first(20))};
  rsdp[32] = std::byte{balancing_checksum(rsdp)};
  return rsdp;
}

}  // namespace lamina::machine::acpi
