#pragma once
// IrqLine: an interrupt line handed to a device at construction, so the device never reaches an
// interrupt controller through a global. Tests pass a line that counts or records levels.
//
// Thread-safety: implementations accept calls from any thread.

namespace lamina::hw {

class IrqLine {
 public:
  virtual ~IrqLine() = default;

  // Level-triggered sources drive the level; edge-triggered ones call pulse().
  virtual void set_level(bool asserted) = 0;
  virtual void pulse() {
    set_level(true);
    set_level(false);
  }
};

}  // namespace lamina::hw
