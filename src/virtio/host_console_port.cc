#include "virtio/host_console_port.h"

#include "base/unix_listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/output_file.h"

namespace lamina::virtio {

namespace {

// Bytes moved per read/write system call; a pipe that polled writable takes this much.
constexpr size_t kChunk = 4096;


}  // namespace

Result<std::unique_ptr<HostConsolePort>> HostConsolePort::open_stdio() {
  return start({.input = STDIN_FILENO,
                .output = STDOUT_FILENO,
                .owns_output = false,
                .listen = -1,
                .socket_path = {}});
}

Result<std::unique_ptr<HostConsolePort>> HostConsolePort::open_file(
    const std::filesystem::path& path, GrantedFiles* granted) {
  auto file = open_output_file(path, "--console-port", granted);
  if (!file) return fail(file.error());
  return start({.input = -1,
                .output = file->release(),
                .owns_output = true,
                .listen = -1,
                .socket_path = {}});
}

Result<UniqueFd> HostConsolePort::listen_socket(const std::filesystem::path& path,
                                                GrantedFiles* granted) {
  const auto listen_here = [&]() -> Result<UniqueFd> {
    return listen_unix_socket(path, "--console-port");
  };
  if (!granted) return listen_here();
  auto obtained = granted->obtain(path.string(), FileAccess::kListen, listen_here);
  if (!obtained) return fail(obtained.error());
  return std::move(obtained->fd);
}

Result<std::unique_ptr<HostConsolePort>> HostConsolePort::open_socket(
    const std::filesystem::path& path, GrantedFiles* granted) {
  auto listening = listen_socket(path, granted);
  if (!listening) return fail(listening.error());
  return start({.input = -1,
                .output = -1,
                .owns_output = false,
                .listen = listening->release(),
                .socket_path = path});
}

Result<std::unique_ptr<HostConsolePort>> HostConsolePort::start(Descriptors descriptors) {
  auto wakeup = WakeupEvent::create("--console-port");
  if (!wakeup) {
    if (descriptors.owns_output) ::close(descriptors.output);
    if (descriptors.listen >= 0) {
      ::close(descriptors.listen);
      ::unlink(descriptors.socket_path.c_str());
    }
    return fail(wakeup.error());
  }
  std::unique_ptr<HostConsolePort> port(
      new HostConsolePort(std::move(descriptors), std::move(*wakeup)));
  port->thread_ = std::jthread([raw = port.get()](std::stop_token stop) { raw->run(stop); });
  return port;
}

HostConsolePort::HostConsolePort(Descriptors descriptors, WakeupEvent wakeup)
    : fds_(std::move(descriptors)), wakeup_(std::move(wakeup)) {}

HostConsolePort::~HostConsolePort() {
  if (thread_.joinable()) {
    thread_.request_stop();
    wakeup_.signal();
    thread_.join();
  }
  drop_client();
  if (fds_.owns_output) ::close(fds_.output);
  if (fds_.listen >= 0) {
    ::close(fds_.listen);
    ::unlink(fds_.socket_path.c_str());
  }
  if (dropped_output_ > 0) {
    log_warn("--console-port: {} bytes of guest output were dropped (nobody read them)",
             dropped_output_);
  }
}

void HostConsolePort::set_listener(Listener* listener) {
  std::lock_guard lock(listener_mutex_);
  listener_ = listener;
}

void HostConsolePort::notify(bool input, bool output) {
  if (!input && !output) return;
  std::lock_guard lock(listener_mutex_);
  if (listener_ == nullptr) return;
  if (input) listener_->input_available();
  if (output) listener_->output_space();
}

size_t HostConsolePort::input_pending() const {
  std::lock_guard lock(mutex_);
  return input_.size();
}

size_t HostConsolePort::read(std::span<std::byte> out) {
  size_t taken = 0;
  bool was_full = false;
  {
    std::lock_guard lock(mutex_);
    was_full = input_.size() >= kInputCapacity;
    taken = std::min(out.size(), input_.size());
    std::copy_n(input_.begin(), taken, out.begin());
    input_.erase(input_.begin(), input_.begin() + static_cast<std::ptrdiff_t>(taken));
  }
  if (was_full && taken > 0) wakeup_.signal();  // the I/O thread reads the host side again
  return taken;
}

bool HostConsolePort::output_ready() const {
  std::lock_guard lock(mutex_);
  return output_.size() < kOutputCapacity;
}

void HostConsolePort::write(std::span<const std::byte> data) {
  if (data.empty()) return;
  uint64_t dropped_total = 0;
  {
    std::lock_guard lock(mutex_);
    // Only the newest kOutputLimit bytes can stay; older ones go first (a console reader wants
    // the latest output, e.g. a panic message).
    const size_t kept = std::min(data.size(), kOutputLimit);
    const size_t overflow =
        (output_.size() + kept > kOutputLimit) ? output_.size() + kept - kOutputLimit : 0;
    output_.erase(output_.begin(), output_.begin() + static_cast<std::ptrdiff_t>(overflow));
    output_.insert(output_.end(), data.end() - static_cast<std::ptrdiff_t>(kept), data.end());
    const size_t dropped = overflow + (data.size() - kept);
    dropped_output_ += dropped;
    output_erased_ += overflow;
    if (dropped > 0) dropped_total = dropped_output_;
  }
  if (dropped_total > 0 && drop_log_.allow()) {
    log_warn(
        "--console-port: output buffer full ({} KiB, nobody reads it): dropping the oldest "
        "guest output ({} bytes so far)",
        kOutputLimit / 1024, dropped_total);
  }
  wakeup_.signal();
}

size_t HostConsolePort::output_pending() const {
  std::lock_guard lock(mutex_);
  return output_.size();
}

uint64_t HostConsolePort::dropped_output_bytes() const {
  std::lock_guard lock(mutex_);
  return dropped_output_;
}

void HostConsolePort::drop_client() {
  if (client_ >= 0) ::close(client_);
  client_ = -1;
}

void HostConsolePort::run(std::stop_token stop) {
  std::array<std::byte, kChunk> buffer;
  while (!stop.stop_requested()) {
    const bool socket_mode = fds_.listen >= 0;
    const int input_fd = socket_mode ? client_ : fds_.input;
    const int output_fd = socket_mode ? client_ : fds_.output;
    bool want_input = false, want_output = false;
    {
      std::lock_guard lock(mutex_);
      want_input = input_fd >= 0 && !input_closed_ && input_.size() < kInputCapacity;
      want_output = output_fd >= 0 && !output_.empty();
    }
    std::array<pollfd, 4> polled{};
    size_t count = 0;
    polled[count++] = {wakeup_.fd(), POLLIN, 0};
    const size_t listen_slot = count;
    if (socket_mode) polled[count++] = {fds_.listen, POLLIN, 0};
    const size_t input_slot = count;
    if (want_input) polled[count++] = {input_fd, POLLIN, 0};
    const size_t output_slot = count;
    if (want_output) polled[count++] = {output_fd, POLLOUT, 0};
    // A connected client is watched for hang-ups even when neither direction is wanted.
    const size_t client_slot = count;
    const bool watch_client = socket_mode && client_ >= 0 && !want_input && !want_output;
    if (watch_client) polled[count++] = {client_, 0, 0};
    if (::poll(polled.data(), count, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (polled[0].revents & POLLIN) {
      wakeup_.clear();
    }
    if (socket_mode && (polled[listen_slot].revents & POLLIN)) {
      const int accepted = ::accept4(fds_.listen, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (accepted >= 0) {
        if (client_ >= 0) {
          ::close(accepted);  // one client at a time
        } else {
          client_ = accepted;
          std::lock_guard lock(mutex_);
          input_closed_ = false;
        }
      }
      continue;  // descriptors changed: poll again
    }
    bool input_arrived = false, output_freed = false, hang_up = false;
    if (want_input && polled[input_slot].revents) {
      size_t room = 0;
      {
        std::lock_guard lock(mutex_);
        room = kInputCapacity - std::min(kInputCapacity, input_.size());
      }
      const ssize_t got = ::read(input_fd, buffer.data(), std::min(room, buffer.size()));
      if (got > 0) {
        std::lock_guard lock(mutex_);
        input_.insert(input_.end(), buffer.begin(), buffer.begin() + got);
        input_arrived = true;
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        hang_up = socket_mode;
        std::lock_guard lock(mutex_);
        input_closed_ = !socket_mode;  // stdin's EOF ends input; a client may come back
      }
    }
    if (want_output && !hang_up && (polled[output_slot].revents & (POLLOUT | POLLERR | POLLHUP))) {
      size_t length = 0;
      uint64_t erased_before = 0;
      {
        std::lock_guard lock(mutex_);
        length = std::min(output_.size(), buffer.size());
        std::copy_n(output_.begin(), length, buffer.begin());
        erased_before = output_erased_;
      }
      const ssize_t sent = socket_mode ? ::send(output_fd, buffer.data(), length, MSG_NOSIGNAL)
                                       : ::write(output_fd, buffer.data(), length);
      std::lock_guard lock(mutex_);
      const bool was_full = output_.size() >= kOutputCapacity;
      if (sent > 0) {
        // write() may have dropped some of the bytes just sent from the front meanwhile.
        const uint64_t gone = std::min<uint64_t>(output_erased_ - erased_before, sent);
        const size_t remove = std::min<size_t>(output_.size(), sent - gone);
        output_.erase(output_.begin(), output_.begin() + static_cast<std::ptrdiff_t>(remove));
      } else if (sent < 0 && errno != EAGAIN && errno != EINTR) {
        if (socket_mode) {
          hang_up = true;
        } else {
          output_.clear();  // a broken stdout or file: drop output rather than stall the guest
        }
      }
      output_freed = was_full && output_.size() < kOutputCapacity;
    }
    if (watch_client && (polled[client_slot].revents & (POLLHUP | POLLERR))) hang_up = true;
    if (hang_up) drop_client();
    notify(input_arrived, output_freed);
  }
}

}  // namespace lamina::virtio
