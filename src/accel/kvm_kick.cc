#include "accel/kvm_kick.h"

#include <pthread.h>

#include <cstring>
#include <mutex>

#include <fmt/format.h>

namespace lamina::accel::kvm {
namespace {

// The handler only has to exist: its delivery is what makes KVM_RUN return EINTR.
void ignore_kick(int) {}

// A real-time signal Lamina does not use for anything else.
int kick_signal_number() { return SIGRTMIN + 4; }

struct Installation {
  std::mutex mutex;
  int users = 0;
  struct sigaction previous {};
};

Installation& installation() {
  static Installation state;
  return state;
}

}  // namespace

Result<KickSignal> KickSignal::install() {
  Installation& shared = installation();
  std::lock_guard lock(shared.mutex);
  const int number = kick_signal_number();
  if (shared.users == 0) {
    struct sigaction action {};
    action.sa_handler = ignore_kick;
    // A kick that lands after the thread left KVM_RUN (in a device's write(), say) must not
    // fail that system call; KVM_RUN itself still returns EINTR (it is never restarted).
    action.sa_flags = SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (::sigaction(number, &action, &shared.previous) != 0) {
      return fail(ErrorCode::kIo,
                  fmt::format("installing the vCPU kick signal: {}", std::strerror(errno)));
    }
  }
  ++shared.users;
  return KickSignal(number);
}

KickSignal::~KickSignal() {
  if (number_ == 0) return;
  Installation& shared = installation();
  std::lock_guard lock(shared.mutex);
  if (--shared.users == 0) ::sigaction(number_, &shared.previous, nullptr);
}

SignalUnblocked::SignalUnblocked(int signal) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, signal);
  pthread_sigmask(SIG_UNBLOCK, &set, &previous_);
}

SignalUnblocked::~SignalUnblocked() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

}  // namespace lamina::accel::kvm
