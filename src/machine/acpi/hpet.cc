#include "machine/acpi/hpet.h"

namespace lamina::machine::acpi {

Bytes build_hpet(uint32_t event_timer_block_id, uint64_t base) {
  Table hpet("HPET", 1);
  hpet.u32(event_timer_block_id);
  hpet.gas({AddressSpace::kSystemMemory, 64, 0, 0, base});
  hpet.u8(0);    // HPET number
  hpet.u16(0);   // main counter minimum clock tick in periodic mode: no restriction
  hpet.u8(0);    // page protection: none
  return std::move(hpet).finish();
}

}  // namespace lamina::machine::acpi
