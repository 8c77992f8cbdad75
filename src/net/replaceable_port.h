#pragma once
// ReplaceablePort: a FramePort whose backend can be swapped for a new one, so a network card
// whose switch daemon died is plugged into the restarted switch without the card (or the
// device factories that borrow this port across reboots) changing. It forwards every call to
// the backend it holds.
//
// Ownership: owns the backend. Thread-safety: as FramePort; replace() only while nothing
// sends, receives or polls through the port (VirtioNet::replace_backend stops its I/O thread
// around it).

#include <memory>
#include <utility>

#include "net/frame_port.h"

namespace lamina::net {

class ReplaceablePort final : public FramePort {
 public:
  explicit ReplaceablePort(std::unique_ptr<FramePort> backend) : backend_(std::move(backend)) {}

  const std::string& description() const override { return backend_->description(); }
  int poll_fd() const override { return backend_->poll_fd(); }
  [[nodiscard]] Result<SendStatus> send(std::span<const std::byte> frame) override {
    return backend_->send(frame);
  }
  [[nodiscard]] Result<std::optional<size_t>> receive(std::span<std::byte> buffer) override {
    return backend_->receive(buffer);
  }

  // The old backend is closed (for a switch: its port there goes).
  void replace(std::unique_ptr<FramePort> backend) { backend_ = std::move(backend); }
  const FramePort& backend() const { return *backend_; }

 private:
  std::unique_ptr<FramePort> backend_;
};

}  // namespace lamina::net
