#pragma once
// Small IrqLine adaptors the machine wires with: IrqFanout drives several lines from one source
// (an ISA IRQ goes to both the 8259 and the IOAPIC), GatedIrqLine forwards only while enabled
// (the PIT's IRQ0 is cut off while the HPET's legacy replacement route is on).
//
// Ownership: they borrow the downstream lines, which must outlive them. Thread-safety: calls
// from any thread; the gate is an atomic.

#include <atomic>
#include <initializer_list>
#include <mutex>
#include <vector>

#include "hw/irq_line.h"

namespace lamina::hw {

class IrqFanout final : public IrqLine {
 public:
  IrqFanout(std::initializer_list<IrqLine*> targets) : targets_(targets) {}
  void set_level(bool asserted) override {
    for (IrqLine* target : targets_) target->set_level(asserted);
  }

 private:
  std::vector<IrqLine*> targets_;
};

class GatedIrqLine final : public IrqLine {
 public:
  explicit GatedIrqLine(IrqLine& target) : target_(target) {}
  void set_level(bool asserted) override {
    std::lock_guard lock(mutex_);
    level_ = asserted;
    if (open_) target_.set_level(asserted);
  }
  // Closing drops the forwarded level; opening forwards the source's current level.
  void set_open(bool open) {
    std::lock_guard lock(mutex_);
    if (open == open_) return;
    open_ = open;
    target_.set_level(open ? level_ : false);
  }

 private:
  IrqLine& target_;
  std::mutex mutex_;
  bool open_ = true;
  bool level_ = false;
};

}  // namespace lamina::hw
