#include "net/switch_daemon.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lamina::net {

namespace {

// Frames read from one port per poll round, so one busy port cannot starve the others.
constexpr int kFramesPerRound = 64;
// Connections beyond max_ports that may wait for their hello at one time.
constexpr size_t kMaxPendingConnections = 16;
// Longest a query reply may block the daemon on a client that does not read.
constexpr int kQuerySendTimeoutMs = 1000;

double seconds(std::chrono::steady_clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

Result<UniqueFd> listen_on(const std::filesystem::path& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return fail(ErrorCode::kIo, fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.native().size() + 1);
  // The caller holds the lock, so a file at the path is a dead daemon's socket.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot remove the stale {}: {}", path.string(), std::strerror(errno)));
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot bind {}: {}", path.string(), std::strerror(errno)));
  }
  // The folder is already 0700; the socket follows suit for anyone who moves it.
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), 64) != 0) {
    return fail(ErrorCode::kIo, fmt::format("listen: {}", std::strerror(errno)));
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<SwitchDaemon>> SwitchDaemon::start(std::string_view name,
                                                          const SwitchDaemonOptions& options) {
  auto paths = switch_paths(name, /*create=*/true);
  if (!paths) return fail(paths.error());
  if (options.max_ports == 0 || options.max_macs == 0 || options.max_macs_per_port == 0 ||
      options.mac_age.count() <= 0) {
    return fail(ErrorCode::kInvalidArgument,
                "the MAC age, the MAC table sizes and the port count must be positive");
  }
  UniqueFd lock(::open(paths->lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock) {
    return fail(ErrorCode::kIo,
                fmt::format("cannot open {}: {}", paths->lock.string(), std::strerror(errno)));
  }
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return std::unique_ptr<SwitchDaemon>();
    return fail(ErrorCode::kIo,
                fmt::format("cannot lock {}: {}", paths->lock.string(), std::strerror(errno)));
  }
  auto listener = listen_on(paths->socket);
  if (!listener) return fail(listener.error().with_context(fmt::format("switch {}", name)));
  return std::unique_ptr<SwitchDaemon>(
      new SwitchDaemon(std::move(*paths), options, std::move(lock), std::move(*listener)));
}

SwitchDaemon::SwitchDaemon(SwitchPaths paths, const SwitchDaemonOptions& options, UniqueFd lock,
                           UniqueFd listener)
    : paths_(std::move(paths)),
      options_(options),
      lock_(std::move(lock)),
      listener_(std::move(listener)),
      started_(Clock::now()),
      idle_since_(started_),
      table_(options.mac_age, options.max_macs, options.max_macs_per_port),
      buffer_(kMaxFrameSize) {}

SwitchDaemon::~SwitchDaemon() {
  // Unlink before closing and unlocking: a newcomer then finds no socket (and starts a daemon,
  // which waits for our lock) instead of a dead one.
  ::unlink(paths_.socket.c_str());
  connections_.clear();
  listener_.reset();
  lock_.reset();
}

Result<void> SwitchDaemon::run(int stop_fd) {
  std::vector<pollfd> polled;
  std::vector<SwitchPortId> polled_ids;
  auto last_expiry = Clock::now();
  for (;;) {
    polled.clear();
    polled_ids.clear();
    polled.push_back({stop_fd, POLLIN, 0});
    polled.push_back({listener_.get(), POLLIN, 0});
    for (auto& [id, connection] : connections_) {
      polled.push_back({connection.fd.get(), POLLIN, 0});
      polled_ids.push_back(id);
    }
    // Wake at least every 100 ms to expire MACs and time out silent connections.
    int timeout_ms = 100;
    if (options_.idle_exit.count() > 0 && connections_.empty()) {
      auto left = options_.idle_exit - (Clock::now() - idle_since_);
      timeout_ms = static_cast<int>(std::clamp<int64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(left).count() + 1, 0, 100));
    }
    if (::poll(polled.data(), polled.size(), timeout_ms) < 0 && errno != EINTR) {
      return fail(ErrorCode::kIo, fmt::format("poll: {}", std::strerror(errno)));
    }
    if (stop_fd >= 0 && (polled[0].revents & POLLIN) != 0) return {};
    if ((polled[1].revents & POLLIN) != 0) accept_connections();
    for (size_t i = 0; i < polled_ids.size(); ++i) {
      if (polled[i + 2].revents == 0) continue;
      auto found = connections_.find(polled_ids[i]);
      if (found == connections_.end()) continue;
      if (found->second.is_port) {
        read_frames(found->second);
      } else {
        read_hello(found->second);
      }
    }
    auto now = Clock::now();
    for (auto& [id, connection] : connections_) {
      if (!connection.is_port && now - connection.since > options_.hello_timeout)
        connection.closing = true;
    }
    std::vector<SwitchPortId> closing;
    for (const auto& [id, connection] : connections_) {
      if (connection.closing) closing.push_back(id);
    }
    for (SwitchPortId id : closing) close_connection(id);
    if (now - last_expiry >= std::chrono::seconds(1)) {
      table_.expire(now);
      last_expiry = now;
    }
    if (options_.idle_exit.count() > 0 && connections_.empty() &&
        now - idle_since_ >= options_.idle_exit) {
      // A client that connected just now is served instead; one that connects between this
      // check and the unlink gets a reset and retries (switch_port.cc).
      if (!listener_has_pending()) return {};
    }
  }
}

void SwitchDaemon::accept_connections() {
  for (;;) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        log_warn("switch {}: accept: {}", paths_.name, std::strerror(errno));
      }
      return;
    }
    // Connections that have not said hello yet are capped too, so a stuck client cannot make
    // the daemon run out of descriptors.
    if (connections_.size() >= options_.max_ports + kMaxPendingConnections) continue;
    Connection connection;
    connection.since = Clock::now();
    ucred credentials{};
    socklen_t size = sizeof(credentials);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &credentials, &size) == 0) {
      connection.status.pid = credentials.pid;
    }
    connection.fd = std::move(fd);
    SwitchPortId id = next_id_++;
    connection.status.id = id;
    connections_.emplace(id, std::move(connection));
  }
}

void SwitchDaemon::read_hello(Connection& connection) {
  ssize_t length = ::recv(connection.fd.get(), buffer_.data(), buffer_.size(), MSG_TRUNC);
  if (length < 0 && (errno == EAGAIN || errno == EINTR)) return;
  connection.closing = true;
  if (length <= 0) return;
  auto refuse = [&](std::string_view why) {
    std::string refusal = encode_refusal(why);
    ::send(connection.fd.get(), refusal.data(), refusal.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  };
  if (static_cast<size_t>(length) > kMaxHelloSize) return refuse("hello too long");
  auto hello = decode_hello(
      std::string_view(reinterpret_cast<const char*>(buffer_.data()), static_cast<size_t>(length)));
  if (!hello) return refuse(hello.error().message());
  if (hello->role == SwitchRole::kQuery) return send_status(connection);
  if (port_count() >= options_.max_ports) {
    return refuse(
        fmt::format("switch {} has its maximum of {} ports", paths_.name, options_.max_ports));
  }
  std::string welcome = encode_welcome(connection.status.id);
  if (::send(connection.fd.get(), welcome.data(), welcome.size(), MSG_DONTWAIT | MSG_NOSIGNAL) !=
      static_cast<ssize_t>(welcome.size())) {
    return;
  }
  connection.closing = false;
  connection.is_port = true;
  connection.since = Clock::now();
  connection.status.label = hello->label;
  connection.mac = hello->mac;
  connection.mac_spoofing = hello->mac_spoofing;
  connection.status.mac = hello->mac.to_string();
  connection.status.mac_spoofing = hello->mac_spoofing;
}

void SwitchDaemon::read_frames(Connection& connection) {
  for (int i = 0; i < kFramesPerRound && !connection.closing; ++i) {
    // MSG_TRUNC makes recv report a datagram's full length, so an oversized one is seen.
    ssize_t length =
        ::recv(connection.fd.get(), buffer_.data(), buffer_.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (length < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      connection.closing = true;
      return;
    }
    if (length == 0) {
      // A zero-length datagram cannot be told apart from the peer's close; both end the port.
      connection.closing = true;
      return;
    }
    auto size = static_cast<size_t>(length);
    if (size < kMinFrameSize) {
      log_malformed(connection, "shorter than an Ethernet header", size);
      continue;
    }
    if (size > kMaxFrameSize) {
      log_malformed(connection, "longer than the largest frame", size);
      continue;
    }
    std::span<const std::byte> frame(buffer_.data(), size);
    const MacAddress source = MacAddress::from_bytes(frame.subspan<6, 6>());
    if (source.is_group()) {
      log_malformed(connection, "from a group (multicast) source address", size);
      continue;
    }
    if (!connection.mac_spoofing && source != connection.mac) {
      log_spoofed(connection, source);
      continue;
    }
    switch_frame(connection, frame, Clock::now());
  }
}

void SwitchDaemon::switch_frame(Connection& ingress, std::span<const std::byte> frame,
                                Clock::time_point now) {
  ingress.status.received_frames++;
  ingress.status.received_bytes += frame.size();
  auto destination = MacAddress::from_bytes(frame.subspan<0, 6>());
  auto source = MacAddress::from_bytes(frame.subspan<6, 6>());
  switch (table_.learn(source, ingress.status.id, now)) {
    case MacTable::Learned::kPortFull: ingress.status.unlearned_sources++; [[fallthrough]];
    case MacTable::Learned::kTableFull: unlearned_sources_++; break;
    default: break;
  }
  if (!destination.is_group()) {
    if (auto port = table_.lookup(destination, now)) {
      auto egress = connections_.find(*port);
      if (*port == ingress.status.id || egress == connections_.end()) {
        // 802.1D: a frame for a station on the port it came from stays on that segment.
        filtered_frames_++;
        return;
      }
      deliver(egress->second, frame);
      return;
    }
  }
  flooded_frames_++;
  for (auto& [id, connection] : connections_) {
    if (connection.is_port && id != ingress.status.id) deliver(connection, frame);
  }
}

void SwitchDaemon::deliver(Connection& egress, std::span<const std::byte> frame) {
  if (egress.closing) {
    egress.status.dropped_frames++;
    return;
  }
  ssize_t sent = ::send(egress.fd.get(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (sent == static_cast<ssize_t>(frame.size())) {
    egress.status.sent_frames++;
    egress.status.sent_bytes += frame.size();
    return;
  }
  egress.status.dropped_frames++;
  // A full buffer only loses this frame; anything else means the peer is gone.
  if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS && errno != EINTR) {
    egress.closing = true;
  }
}

void SwitchDaemon::close_connection(SwitchPortId id) {
  auto found = connections_.find(id);
  if (found == connections_.end()) return;
  bool was_port = found->second.is_port;
  if (was_port) table_.forget_port(id);
  connections_.erase(found);
  // Idle time counts from the last port's departure; queries do not keep a switch alive.
  if (was_port && port_count() == 0) idle_since_ = Clock::now();
}

void SwitchDaemon::send_status(Connection& connection) {
  std::string text = encode_status(status(Clock::now()));
  // A query gets a blocking socket with a send timeout: the reply may exceed one buffer.
  int flags = ::fcntl(connection.fd.get(), F_GETFL);
  ::fcntl(connection.fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  timeval timeout{0, kQuerySendTimeoutMs * 1000};
  ::setsockopt(connection.fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  for (size_t offset = 0; offset < text.size(); offset += kQueryChunkSize) {
    size_t size = std::min(kQueryChunkSize, text.size() - offset);
    if (::send(connection.fd.get(), text.data() + offset, size, MSG_NOSIGNAL) !=
        static_cast<ssize_t>(size)) {
      break;
    }
  }
  connection.closing = true;
}

SwitchStatus SwitchDaemon::status(Clock::time_point now) const {
  SwitchStatus status;
  status.name = paths_.name;
  status.pid = ::getpid();
  status.uptime_seconds = seconds(now - started_);
  status.mac_age_seconds = seconds(options_.mac_age);
  status.max_macs = options_.max_macs;
  status.max_ports = options_.max_ports;
  status.max_macs_per_port = options_.max_macs_per_port;
  status.flooded_frames = flooded_frames_;
  status.filtered_frames = filtered_frames_;
  status.unlearned_sources = unlearned_sources_;
  for (const auto& [id, connection] : connections_) {
    if (!connection.is_port) continue;
    SwitchPortStatus port = connection.status;
    port.connected_seconds = seconds(now - connection.since);
    status.ports.push_back(std::move(port));
  }
  for (const auto& entry : table_.entries(now)) {
    status.macs.push_back({entry.address.to_string(), entry.port, seconds(entry.age)});
  }
  return status;
}

size_t SwitchDaemon::port_count() const {
  return std::count_if(connections_.begin(), connections_.end(),
                       [](const auto& item) { return item.second.is_port; });
}

bool SwitchDaemon::listener_has_pending() const {
  pollfd polled{listener_.get(), POLLIN, 0};
  return ::poll(&polled, 1, 0) > 0 && (polled.revents & POLLIN) != 0;
}

void SwitchDaemon::log_malformed(Connection& ingress, std::string_view why, size_t length) {
  ingress.status.malformed_frames++;
  if (malformed_log_.allow()) {
    log_warn("switch {}: port {} ({}): dropped a {}-byte frame {}", paths_.name, ingress.status.id,
             ingress.status.label, length, why);
  }
}

void SwitchDaemon::log_spoofed(Connection& ingress, const MacAddress& source) {
  ingress.status.spoofed_frames++;
  if (spoofed_log_.allow()) {
    log_warn(
        "switch {}: port {} ({}): dropped a frame from {}, not the port's own {} (MAC "
        "spoofing is off for it)",
        paths_.name, ingress.status.id, ingress.status.label, source.to_string(),
        ingress.mac.to_string());
  }
}

}  // namespace lamina::net
