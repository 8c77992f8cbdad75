#pragma once
// Why a machine stopped, as data: device callbacks (ACPI S5, the reset port, debug-exit), a vCPU
// (triple fault), the console (Ctrl-A x) and errors post a MachineStop to the StopQueue; the run
// loop waits on the queue and acts on the first one (later ones are kept but ignored).
//
// Ownership: plain values. Thread-safety: StopQueue::post() from any thread, including device
// callbacks running on a vCPU thread with no device lock held; wait() from the run-loop thread.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>

namespace lamina::machine {

enum class MachineExit : uint8_t {
  kPowerOff,     // ACPI S5 (or any other orderly poweroff)
  kReset,        // the guest asked for a reset (0xcf9, i8042 pulse, ACPI reset register)
  kTripleFault,  // a vCPU shut down; `reason` says what faulted
  kDebugExit,    // a write to the debug-exit port; `status` is (value << 1) | 1
  kUserQuit,     // Ctrl-A x on the console
  kHostStop,     // the host stopped the VM (kill, or a forced stop through the control channel)
  kError,        // the machine could not go on (a vCPU could not be created, ...)
};

struct MachineStop {
  MachineExit exit = MachineExit::kError;
  std::string reason;
  uint32_t status = 0;  // kDebugExit only
};

class StopQueue {
 public:
  void post(MachineStop stop) {
    {
      std::lock_guard lock(mutex_);
      stops_.push_back(std::move(stop));
    }
    changed_.notify_all();
  }
  // The first stop posted, waiting at most `timeout`; nullopt when none arrived.
  std::optional<MachineStop> wait_for(std::chrono::nanoseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [this] { return !stops_.empty(); })) return std::nullopt;
    return stops_.front();
  }
  bool stopped() const {
    std::lock_guard lock(mutex_);
    return !stops_.empty();
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<MachineStop> stops_;
};

}  // namespace lamina::machine
