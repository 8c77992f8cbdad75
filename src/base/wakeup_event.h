#pragma once
// WakeupEvent: an eventfd another thread signals to wake a device's or backend's I/O thread.
// Signals only add to the counter (never block) and coalesce: any number of them before the
// I/O thread looks costs it one wakeup. The fd is non-blocking, so the I/O thread can poll it
// together with its other fds and clear() it, or sleep on it alone with wait().
//
// Ownership: owns the eventfd (RAII, move-only). Thread-safety: signal() from any thread;
// clear() and wait() from the one thread that sleeps on it.

#include <string_view>

#include "base/error.h"
#include "base/unique_fd.h"

namespace lamina {

class WakeupEvent {
 public:
  // kIo naming `owner` when the host refuses an eventfd.
  static Result<WakeupEvent> create(std::string_view owner);

  void signal() const;
  // For poll(2): readable while signalled.
  int fd() const { return fd_.get(); }
  // Resets the counter (after poll said readable); harmless when not signalled.
  void clear() const;
  // Sleeps until signalled, then clears. A stale signal costs the caller one extra look.
  void wait() const;

 private:
  explicit WakeupEvent(UniqueFd fd) : fd_(std::move(fd)) {}

  UniqueFd fd_;
};

}  // namespace lamina
