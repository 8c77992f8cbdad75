#pragma once
// SystemControlPort: port 0x61 (NMI status and control / "port B" of the PC/AT). Bit 0 is the
// PIT channel 2 GATE, bit 1 enables the speaker (kept, no sound), bits 2-3 are the parity and
// I/O channel check enables (kept), bit 4 toggles every 15.085 us (DRAM refresh; BIOS delay
// loops poll it), bit 5 is PIT channel 2's OUT. Linux's TSC calibration gates channel 2 here and
// polls bit 5. Bits 6-7 (parity and I/O check errors) always read 0.
//
// Ownership: borrows the PIT and the clock. Thread-safety: the register byte is atomic; the PIT
// synchronizes itself.

#include <atomic>

#include "hw/clock.h"
#include "hw/device.h"
#include "hw/pit8254.h"
#include "hw/stateful.h"

namespace lamina::hw {

class SystemControlPort final : public Device, public Stateful {
 public:
  SystemControlPort(Pit8254& pit, const Clock& clock) : pit_(pit), clock_(clock) {}

  std::string_view name() const override { return "port61"; }
  void read(uint64_t offset, std::span<std::byte> data) override;
  void write(uint64_t offset, std::span<const std::byte> data) override;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  Pit8254& pit_;
  const Clock& clock_;
  std::atomic<uint8_t> control_{0};  // bits 0-3 as written
};

}  // namespace lamina::hw
