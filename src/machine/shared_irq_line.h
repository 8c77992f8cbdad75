#pragma once
// SharedIrqLine: a wired-OR interrupt line for level-triggered PCI INTx. Several functions'
// INTx pins share one IOAPIC input (the DSDT's _PRT folds 32 slots onto GSIs 16-19), and the
// input is asserted while any of them asserts, as on a real board's open-drain line.
//
// Ownership: borrows the target line; owns the per-source inputs it hands out (stable
// addresses; a released one is handed out again, so hotplug does not grow the list).
// Thread-safety: add_source()/release_source() with the line's sources quiet (machine build,
// or hotplug with the vCPUs held); set_level from any thread.

#include <cstdint>
#include <deque>
#include <mutex>

#include "hw/irq_line.h"

namespace lamina::machine {

class SharedIrqLine {
 public:
  explicit SharedIrqLine(hw::IrqLine& target) : target_(target) {}
  SharedIrqLine(const SharedIrqLine&) = delete;
  SharedIrqLine& operator=(const SharedIrqLine&) = delete;

  // A new input for one source (one PCI function's INTx).
  hw::IrqLine& add_source() {
    std::lock_guard lock(mutex_);
    for (Source& source : sources_) {
      if (!source.in_use) {
        source.in_use = true;
        return source;
      }
    }
    return sources_.emplace_back(*this);
  }
  // The source's function is gone (hot-unplugged): its level leaves the OR.
  void release_source(hw::IrqLine& line) {
    for (Source& source : sources_) {
      if (&source != &line) continue;
      source.set_level(false);
      std::lock_guard lock(mutex_);
      source.in_use = false;
    }
  }

 private:
  class Source final : public hw::IrqLine {
   public:
    explicit Source(SharedIrqLine& owner) : owner_(owner) {}
    void set_level(bool asserted) override { owner_.update(*this, asserted); }
    bool level = false;  // guarded by the owner's mutex
    bool in_use = true;  // guarded by the owner's mutex

   private:
    SharedIrqLine& owner_;
  };

  void update(Source& source, bool asserted) {
    std::lock_guard lock(mutex_);
    if (source.level == asserted) return;
    source.level = asserted;
    asserted_count_ += asserted ? 1 : -1;
    // Forward only the OR's changes; the target sees one level, like the wire.
    if ((asserted && asserted_count_ == 1) || (!asserted && asserted_count_ == 0)) {
      target_.set_level(asserted);
    }
  }

  hw::IrqLine& target_;
  std::deque<Source> sources_;
  std::mutex mutex_;
  int32_t asserted_count_ = 0;
};

}  // namespace lamina::machine
