#pragma once
// TapPort: a FramePort on a host tap interface (Linux TUN/TAP, Documentation/networking/
// tuntap.rst), for guests on real networks: the host bridges or routes the tap like any NIC.
// Opens /dev/net/tun with IFF_TAP | IFF_NO_PI, so each read(2)/write(2) is exactly one
// Ethernet frame with no packet-information prefix; the descriptor is non-blocking.
// Attaches to an existing tap interface (made with `ip tuntap add dev NAME mode tap user
// USER`, which lets that user open it without privileges) or, with CAP_NET_ADMIN, creates a
// transient one that disappears when the port closes.
//
// Ownership: owns the tun descriptor. Thread-safety: as FramePort.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "net/frame_port.h"
#include "base/unique_fd.h"

namespace lamina::net {

class TapPort final : public FramePort {
 public:
  // Opens tap `interface_name` (1-15 bytes, no '/', ':' or white space). kInvalidArgument for
  // a bad name or an interface that exists but is not a tap; kNotFound without /dev/net/tun;
  // kIo for a refused open naming the fix (permission, busy).
  [[nodiscard]] static Result<std::unique_ptr<TapPort>> open(std::string_view interface_name);
  // The attached /dev/net/tun descriptor alone (laminad opens it for a sandboxed worker), and
  // the port on such a descriptor.
  [[nodiscard]] static Result<UniqueFd> open_descriptor(std::string_view interface_name);
  static std::unique_ptr<TapPort> adopt(std::string interface_name, UniqueFd fd);

  const std::string& description() const override { return description_; }
  int poll_fd() const override { return fd_.get(); }
  [[nodiscard]] Result<SendStatus> send(std::span<const std::byte> frame) override;
  [[nodiscard]] Result<std::optional<size_t>> receive(std::span<std::byte> buffer) override;

  // The interface name the kernel reports (the one asked for).
  const std::string& interface_name() const { return interface_name_; }

 private:
  TapPort(std::string interface_name, UniqueFd fd);

  std::string interface_name_;
  std::string description_;
  UniqueFd fd_;
  // A tap's reads hand over whole frames, but read(2) into a short buffer loses the rest of
  // the frame silently, so receive() reads into this full-size buffer when given a short one.
  std::vector<std::byte> bounce_;
};

}  // namespace lamina::net
