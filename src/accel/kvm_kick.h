#pragma once
// How another thread makes a vCPU's KVM_RUN return promptly (api.rst 4.10 and 5 "immediate_exit"):
// the kicker sets the run area's immediate_exit and, when the vCPU thread is inside KVM_RUN,
// sends it the kick signal. The signal interrupts KVM_RUN with EINTR; immediate_exit covers the
// window in which the thread is about to enter, so no kick is lost. The signal's handler does
// nothing; the vCPU thread unblocks the signal only while it runs the guest (SignalUnblocked).
//
// A signal disposition is process-wide, so the handler is installed by the first KickSignal
// alive and the previous disposition restored when the last one goes (a mutex-guarded count
// inside kvm_kick.cc: the one piece of process state this backend must share).
//
// Ownership: KickSignal and SignalUnblocked are RAII scopes. Thread-safety: KickSignal may be
// created and destroyed from any thread; SignalUnblocked affects only the calling thread.

#include <signal.h>

#include "base/error.h"

namespace lamina::accel::kvm {

class KickSignal {
 public:
  static Result<KickSignal> install();
  KickSignal(KickSignal&& other) noexcept : number_(other.number_) { other.number_ = 0; }
  KickSignal& operator=(KickSignal&&) = delete;
  KickSignal(const KickSignal&) = delete;
  KickSignal& operator=(const KickSignal&) = delete;
  ~KickSignal();

  int number() const { return number_; }

 private:
  explicit KickSignal(int number) : number_(number) {}
  int number_;  // 0 after a move
};

// Unblocks `signal` in the calling thread for the scope's lifetime, then restores the mask.
class SignalUnblocked {
 public:
  explicit SignalUnblocked(int signal);
  ~SignalUnblocked();
  SignalUnblocked(const SignalUnblocked&) = delete;
  SignalUnblocked& operator=(const SignalUnblocked&) = delete;

 private:
  sigset_t previous_{};
};

}  // namespace lamina::accel::kvm
