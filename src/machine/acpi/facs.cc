#include "machine/acpi/facs.h"

#include <cstring>

#include "base/byte_order.h"

namespace lamina::machine::acpi {

Bytes build_facs() {
  Bytes facs(kFacsSize);
  std::memcpy(facs.data(), "FACS", 4);
  store_le<uint32_t>(facs.data() + 4, kFacsSize);
  // Hardware signature 0, waking vectors 0, global lock free, flags 0; version 2 (ACPI 2.0+).
  facs[32] = std::byte{2};
  return facs;
}

}  // namespace lamina::machine::acpi
