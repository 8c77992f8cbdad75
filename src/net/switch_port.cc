#include "net/switch_port.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "net/switch_protocol.h"

namespace lamina::net {

namespace {

using Clock = std::chrono::steady_clock;

int milliseconds_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(left.count(), 0));
}

// Connects to `path`, says hello and waits for the welcome. A null port means nobody answered
// at the socket path (no daemon, a dead one, or one that is just exiting); an error is one
// that retrying will not fix (the switch refused the port).
Result<std::unique_ptr<SwitchPort>> try_connect(const SwitchPaths& paths,
                                                const SwitchConnectOptions& options,
                                                Clock::time_point deadline) {
  const auto not_listening = [] { return std::unique_ptr<SwitchPort>(); };
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail(ErrorCode::kIo, fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, paths.socket.c_str(), paths.socket.native().size() + 1);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    // ENOENT/ECONNREFUSED: no listener; EAGAIN: its backlog is full, try again shortly.
    if (errno == ENOENT || errno == ECONNREFUSED || errno == EAGAIN) return not_listening();
    return fail(ErrorCode::kIo, fmt::format("cannot connect to {}: {}", paths.socket.string(),
                                            std::strerror(errno)));
  }
  std::string hello =
      encode_hello({SwitchRole::kPort, options.label, options.mac, options.mac_spoofing});
  if (::send(fd.get(), hello.data(), hello.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(hello.size())) {
    return not_listening();
  }
  pollfd polled{fd.get(), POLLIN, 0};
  int ready = ::poll(&polled, 1, std::max(milliseconds_until(deadline), 1));
  if (ready <= 0) return not_listening();
  char reply[1024];
  ssize_t length = ::recv(fd.get(), reply, sizeof(reply), 0);
  // A daemon that closed its listener as we connected resets us: retry from the start.
  if (length <= 0) return not_listening();
  auto port = decode_welcome(std::string_view(reply, static_cast<size_t>(length)));
  if (!port) return fail(port.error());
  return std::make_unique<SwitchPort>(paths.name, *port, std::move(fd));
}

}  // namespace

SwitchPort::SwitchPort(std::string name, uint32_t port_id, UniqueFd socket)
    : description_("switch:" + name), port_id_(port_id), socket_(std::move(socket)) {}

Error SwitchPort::gone(int error_number) const {
  return Error(ErrorCode::kIo, fmt::format("{}: the switch daemon went away ({})", description_,
                                           error_number == 0 ? "it closed the connection"
                                                             : std::strerror(error_number)));
}

Result<SendStatus> SwitchPort::send(std::span<const std::byte> frame) {
  if (auto size_ok = check_frame_size(frame); !size_ok) return fail(size_ok.error());
  for (;;) {
    ssize_t sent = ::send(socket_.get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(frame.size())) {
      count_sent(frame.size());
      return SendStatus::kSent;
    }
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
      return SendStatus::kBusy;
    }
    return std::unexpected(gone(sent < 0 ? errno : EIO));
  }
}

Result<std::optional<size_t>> SwitchPort::receive(std::span<std::byte> buffer) {
  for (;;) {
    // MSG_TRUNC: the return value is the datagram's full length even when it did not fit.
    ssize_t length = ::recv(socket_.get(), buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (length < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<size_t>();
      return std::unexpected(gone(errno));
    }
    if (length == 0) return std::unexpected(gone(0));
    if (static_cast<size_t>(length) > buffer.size()) {
      count_dropped();
      continue;
    }
    count_received(static_cast<size_t>(length));
    return std::optional<size_t>(static_cast<size_t>(length));
  }
}

Result<std::unique_ptr<SwitchPort>> connect_switch(std::string_view name,
                                                   const SwitchConnectOptions& options) {
  if (options.mac.is_group() || options.mac.is_zero()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("switch {}: a port needs its card's unicast MAC address", name));
  }
  auto paths = switch_paths(name, /*create=*/true);
  if (!paths) return fail(paths.error());
  auto deadline = Clock::now() + options.timeout;
  auto pause = std::chrono::milliseconds(5);
  for (;;) {
    auto answer = try_connect(*paths, options, deadline);
    if (!answer) return fail(answer.error().with_context(fmt::format("switch {}", name)));
    if (*answer) return std::move(*answer);
    if (!options.auto_start) {
      return fail(ErrorCode::kNotFound,
                  fmt::format("switch {}: no switch daemon is running (start one with 'lamina "
                              "switch serve {}')",
                              name, name));
    }
    if (Clock::now() >= deadline) {
      return fail(ErrorCode::kIo,
                  fmt::format("switch {}: no switch daemon answered within {} ms (its log: {})",
                              name, options.timeout.count(), paths->log.string()));
    }
    auto launched =
        launch_switch_daemon(*paths, options.daemon,
                             std::chrono::milliseconds(std::max(milliseconds_until(deadline), 1)));
    if (!launched) return fail(launched.error());
    // kBusy: another daemon holds the lock; it is starting (connect soon works) or exiting
    // (its lock frees soon and the next launch wins). Either way, wait a little.
    if (*launched == LaunchOutcome::kBusy) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(100));
    }
  }
}

}  // namespace lamina::net
