#include "base/wakeup_event.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace lamina {

Result<WakeupEvent> WakeupEvent::create(std::string_view owner) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) {
    return fail(ErrorCode::kIo, fmt::format("{}: eventfd: {}", owner, std::strerror(errno)));
  }
  return WakeupEvent(std::move(fd));
}

void WakeupEvent::signal() const {
  const uint64_t one = 1;
  // Fails only when the counter would pass 2^64 - 2, which signals cannot reach.
  [[maybe_unused]] ssize_t written = ::write(fd_.get(), &one, sizeof(one));
}

void WakeupEvent::clear() const {
  uint64_t count = 0;
  // EAGAIN (not signalled) leaves nothing to do.
  [[maybe_unused]] ssize_t got = ::read(fd_.get(), &count, sizeof(count));
}

void WakeupEvent::wait() const {
  pollfd polled{fd_.get(), POLLIN, 0};
  while (::poll(&polled, 1, -1) < 0 && errno == EINTR) {
  }
  clear();
}

}  // namespace lamina
