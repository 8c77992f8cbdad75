#pragma once
// SwitchDaemon: one Lamina virtual switch (like a Hyper-V private virtual switch): VMs on this
// host, each its own process, plug ports into it without root and reach each other as on one
// Ethernet segment. It listens on NAME.sock (switch_paths.h; protocol in switch_protocol.h) and
// forwards like an IEEE 802.1D learning bridge:
//   - learns each frame's source address → the port it came in on (MacTable, with ageing);
//   - known unicast goes to its port only (dropped and counted as filtered when that is the
//     port it came from); group (broadcast/multicast) and unknown unicast flood to every other
//     port; a frame never goes back to its sender;
//   - a port's addresses are forgotten when it disconnects;
//   - a frame shorter than 14 bytes, longer than 65549 bytes or with a group source address is
//     dropped, counted and logged (rate-limited);
//   - a port declares its card's MAC address in its hello; a frame whose source is another
//     address is dropped and counted (spoofed_frames) unless the port has MAC spoofing on, as
//     Hyper-V's switch does, so a guest cannot take another VM's address and its traffic;
//   - a port learns at most max_macs_per_port addresses (only a spoofing port can have more
//     than its own), so one guest cannot fill the table and make the switch flood.
// Every frame that does not reach a port is counted (per port: malformed, dropped; per switch:
// filtered), so nothing is lost silently. Delivery never blocks the switch: a port whose socket
// buffer is full loses that frame (counted as its dropped_frames), like a congested switch
// port.
//
// Exactly one daemon serves a name: start() takes an exclusive flock on NAME.lock for the
// daemon's lifetime before it touches the socket path, so concurrent starters are race-free.
//
// Ownership: owns its sockets and lock. Thread-safety: run() on one thread; the object must
// not be used from others (stop it through the stop fd).

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "base/unique_fd.h"
#include "net/frame_port.h"
#include "net/mac_table.h"
#include "net/switch_paths.h"
#include "net/switch_protocol.h"

namespace lamina::net {

struct SwitchDaemonOptions {
  std::chrono::milliseconds mac_age{std::chrono::seconds(300)};
  size_t max_macs = 4096;
  // Addresses learned per port (a bridging guest with MAC spoofing on may have several).
  size_t max_macs_per_port = 64;
  size_t max_ports = 256;
  // Exit this long after the last port left (counting from start when none came);
  // zero runs until stopped.
  std::chrono::milliseconds idle_exit{0};
  // A connection that has not said hello this long after connecting is closed, so an idle
  // client cannot hold a slot.
  std::chrono::milliseconds hello_timeout{std::chrono::seconds(2)};
};

class SwitchDaemon {
 public:
  // Takes the lock of switch `name`, replaces a stale socket and listens. Returns nullptr when
  // another daemon already serves `name` (it holds the lock).
  [[nodiscard]] static Result<std::unique_ptr<SwitchDaemon>> start(
      std::string_view name, const SwitchDaemonOptions& options);

  // Removes the socket path (while still holding the lock), then releases the lock.
  ~SwitchDaemon();
  SwitchDaemon(const SwitchDaemon&) = delete;
  SwitchDaemon& operator=(const SwitchDaemon&) = delete;

  // Serves until `stop_fd` (an eventfd, signalfd or pipe; -1 for none) becomes readable, or
  // idle_exit passes with no connection.
  [[nodiscard]] Result<void> run(int stop_fd);

  const SwitchPaths& paths() const { return paths_; }

 private:
  using Clock = std::chrono::steady_clock;

  struct Connection {
    UniqueFd fd;
    bool is_port = false;  // false: waiting for its hello
    bool closing = false;
    Clock::time_point since;
    MacAddress mac;  // from the hello
    bool mac_spoofing = false;
    SwitchPortStatus status;
  };

  SwitchDaemon(SwitchPaths paths, const SwitchDaemonOptions& options, UniqueFd lock,
               UniqueFd listener);

  void accept_connections();
  void read_hello(Connection& connection);
  void read_frames(Connection& connection);
  void switch_frame(Connection& ingress, std::span<const std::byte> frame, Clock::time_point now);
  void deliver(Connection& egress, std::span<const std::byte> frame);
  void close_connection(SwitchPortId id);
  void send_status(Connection& connection);
  SwitchStatus status(Clock::time_point now) const;
  bool listener_has_pending() const;
  size_t port_count() const;
  void log_malformed(Connection& ingress, std::string_view why, size_t length);
  void log_spoofed(Connection& ingress, const MacAddress& source);

  SwitchPaths paths_;
  SwitchDaemonOptions options_;
  UniqueFd lock_;
  UniqueFd listener_;
  Clock::time_point started_;
  Clock::time_point idle_since_;
  MacTable table_;
  std::map<SwitchPortId, Connection> connections_;
  SwitchPortId next_id_ = 1;
  uint64_t flooded_frames_ = 0;
  uint64_t filtered_frames_ = 0;
  uint64_t unlearned_sources_ = 0;
  std::vector<std::byte> buffer_;
  RateLimiter malformed_log_;
  RateLimiter spoofed_log_;
};

}  // namespace lamina::net
