#pragma once
// Stateful: a component whose guest-visible state can be saved to and restored from a
// StateStream (checkpoints, migration). Every device model implements it; a device that answers
// on several port ranges (the PIC pair, the PCI host) is one Stateful with several Device windows.
//
// Thread-safety: save() and load() are called while the machine is stopped (no vCPU runs and the
// TimerQueue is not serviced). load() validates everything it reads: a corrupt or hostile
// stream fails with an Error and never leaves a register value the device could not hold.

#include "base/error.h"
#include "base/state_stream.h"

namespace lamina::hw {

class Stateful {
 public:
  virtual ~Stateful() = default;

  // Writes one section named after the device type, with the type's state version.
  virtual void save(StateWriter& writer) const = 0;
  // Reads what save() wrote; timers are re-armed from the restored registers.
  [[nodiscard]] virtual Result<void> load(StateReader& reader) = 0;
};

}  // namespace lamina::hw
