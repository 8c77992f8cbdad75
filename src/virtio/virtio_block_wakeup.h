#pragma once
// BlockWakeup: the eventfd a virtio-blk device's vCPU side uses to wake its I/O thread. A kick
// only adds to the counter (never blocks), and the I/O thread sleeps in wait() until a kick or
// a stop arrives; kicks that come while it works coalesce into one wakeup.
//
// Ownership: owns the eventfd (RAII). Thread-safety: signal() from any thread, wait() from the
// one I/O thread.

#include <cerrno>
#include <cstdint>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/error.h"

namespace lamina::virtio {

class BlockWakeup {
 public:
  static Result<BlockWakeup> create() {
    const int fd = ::eventfd(0, EFD_CLOEXEC);
    if (fd < 0) return fail(ErrorCode::kIo, "virtio-blk: could not create an eventfd");
    return BlockWakeup(fd);
  }
  BlockWakeup(BlockWakeup&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  BlockWakeup& operator=(BlockWakeup&&) = delete;
  BlockWakeup(const BlockWakeup&) = delete;
  BlockWakeup& operator=(const BlockWakeup&) = delete;
  ~BlockWakeup() {
    if (fd_ >= 0) ::close(fd_);
  }

  void signal() const {
    const uint64_t one = 1;
    // A write blocks only when the counter is at 2^64 - 2, which kicks cannot reach.
    [[maybe_unused]] ssize_t ignored = ::write(fd_, &one, sizeof(one));
  }

  // Blocks until the counter is non-zero, then resets it. A stale kick only costs the I/O
  // thread one extra look at an empty queue.
  void wait() const {
    uint64_t count = 0;
    while (::read(fd_, &count, sizeof(count)) != sizeof(count) && errno == EINTR) {
    }
  }

 private:
  explicit BlockWakeup(int fd) : fd_(fd) {}

  int fd_ = -1;
};

}  // namespace lamina::virtio
