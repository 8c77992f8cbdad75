#pragma once
// SwitchPort: a FramePort plugged into the Lamina virtual switch NAME (switch_daemon.h) — one
// SOCK_SEQPACKET connection to NAME.sock, one datagram per frame. connect_switch() starts the
// switch's daemon in the background when none answers (daemon_launcher.h), so the first VM on
// a switch creates it and the daemon goes away a while after the last VM left.
//
// Ownership: owns its socket; destroying the port unplugs it. Thread-safety: as FramePort.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "base/unique_fd.h"
#include "net/daemon_launcher.h"
#include "net/frame_port.h"
#include "net/mac_address.h"

namespace lamina::net {

struct SwitchConnectOptions {
  // Shown by `lamina switch show` next to the port, e.g. "vm web1".
  std::string label;
  // The card's own unicast address; with mac_spoofing off the switch drops frames from the
  // port whose source is any other address.
  MacAddress mac;
  bool mac_spoofing = false;
  // Start a daemon when none serves the switch; otherwise a missing daemon is kNotFound.
  bool auto_start = true;
  DaemonProgram daemon{.program = "/proc/self/exe", .arguments = {"--idle-exit", "10"}};
  // Give up after this long (daemon start included).
  std::chrono::milliseconds timeout{std::chrono::seconds(5)};
};

class SwitchPort final : public FramePort {
 public:
  SwitchPort(std::string name, uint32_t port_id, UniqueFd socket);

  const std::string& description() const override { return description_; }
  int poll_fd() const override { return socket_.get(); }
  [[nodiscard]] Result<SendStatus> send(std::span<const std::byte> frame) override;
  [[nodiscard]] Result<std::optional<size_t>> receive(std::span<std::byte> buffer) override;

  // The id the switch gave this port (as `lamina switch show` lists it).
  uint32_t port_id() const { return port_id_; }
  // Hands the connection over (laminad passes it to a worker); the port is unusable after.
  UniqueFd release_socket() { return std::move(socket_); }

 private:
  Error gone(int error_number) const;

  std::string description_;
  uint32_t port_id_;
  UniqueFd socket_;
};

// Plugs a new port into switch `name`. kInvalidArgument for a bad name or a refused port (the
// switch is full); kNotFound when no daemon serves it and auto_start is off; kIo otherwise.
[[nodiscard]] Result<std::unique_ptr<SwitchPort>> connect_switch(
    std::string_view name, const SwitchConnectOptions& options);

}  // namespace lamina::net
