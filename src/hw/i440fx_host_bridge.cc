#include "hw/i440fx_host_bridge.h"

namespace lamina::hw {

I440fxHostBridge::I440fxHostBridge(ShadowRam& shadow)
    : PciDevice("i440fx-host-bridge", kVendor, kDevice, 0x060000, 0x02), shadow_(shadow) {
  // PAM0 has only its high field (bits 5:4); the low nibble is reserved.
  set_writable(kPam0, 1, 0x30);
  for (unsigned reg = 1; reg < kPamRegisters; ++reg) {
    set_writable(static_cast<uint16_t>(kPam0 + reg), 1, 0x33);
  }
}

ShadowRam::Access I440fxHostBridge::decode(uint8_t field) {
  return ShadowRam::Access{.read_dram = (field & 1) != 0, .write_dram = (field & 2) != 0};
}

unsigned I440fxHostBridge::segment_of(unsigned reg, bool high) {
  // PAM0 high: segment 0 (0xF0000); PAMn low/high: segments 2n-1 and 2n.
  return reg == 0 ? 0 : 2 * reg - 1 + (high ? 1 : 0);
}

void I440fxHostBridge::config_written(uint16_t offset, unsigned size) {
  if (offset + size > kPam0 && offset < kPam0 + kPamRegisters) apply_pam();
}

void I440fxHostBridge::apply_pam() {
  for (unsigned reg = 0; reg < kPamRegisters; ++reg) {
    const auto value = static_cast<uint8_t>(stored_config(static_cast<uint16_t>(kPam0 + reg), 1));
    if (reg == 0) {
      shadow_.set_access(0, decode(value >> 4));
      continue;
    }
    shadow_.set_access(segment_of(reg, false), decode(value & 0xf));
    shadow_.set_access(segment_of(reg, true), decode(value >> 4));
  }
}

}  // namespace lamina::hw
