#pragma once
// I440fxHostBridge: function 00:00.0 as an Intel 82441FX (i440FX) PMC presents itself
// (8086:1237, revision 2), the identity SeaBIOS looks for before it shadows itself, with the
// seven PAM registers at 0x59-0x5F (82441FX datasheet, section 3.2.18) driving ShadowRam.
// Each PAM register holds two 4-bit fields (bit 0 read enable, bit 1 write enable: the access
// goes to DRAM): PAM0's high field is 0xF0000-0xFFFFF, PAM1-PAM6's fields are 0xC0000-0xEFFFF
// in 16 KiB steps, low field first. The other chipset registers read as zero.
//
// Ownership: borrows the ShadowRam. Thread-safety: as PciDevice (config cycles from the host
// bridge, serialised by PciHost). Saved state: the PAM registers travel in config space and
// ShadowRam saves the access they set, so a restore applies nothing twice.

#include "hw/pci_device.h"
#include "hw/shadow_ram.h"

namespace lamina::hw {

class I440fxHostBridge final : public PciDevice {
 public:
  static constexpr uint16_t kVendor = 0x8086;
  static constexpr uint16_t kDevice = 0x1237;
  static constexpr uint16_t kPam0 = 0x59;
  static constexpr unsigned kPamRegisters = 7;

  explicit I440fxHostBridge(ShadowRam& shadow);

  // The ShadowRam access PAM register `reg` (0-6) field `high` gives, and its segment.
  static ShadowRam::Access decode(uint8_t field);
  static unsigned segment_of(unsigned reg, bool high);

 private:
  void config_written(uint16_t offset, unsigned size) override;
  void apply_pam();

  ShadowRam& shadow_;
};

}  // namespace lamina::hw
