#pragma once
// MessageChannel: one end of a SOCK_SEQPACKET Unix socket that carries JSON messages, one
// message per datagram, each with up to kMaxFds file descriptors (SCM_RIGHTS). It is the wire
// of the worker's control channel (laminad <-> lamina-vm) and of any other local protocol
// whose peer may be hostile: every received message is bounded in size and fd count, must
// parse as one JSON object, and a malformed one is an error, never a crash.
//
// Ownership: owns its socket. Thread-safety: send() and receive() may run on different threads
// at once (the kernel keeps datagrams whole); two concurrent senders need the caller's lock.

#include <chrono>
#include <optional>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/unique_fd.h"

namespace lamina {

class MessageChannel {
 public:
  static constexpr size_t kMaxMessageBytes = 64 * 1024;
  // The kernel's SCM_MAX_FD: a VM's grants (an image split into many extents) may need many.
  static constexpr size_t kMaxFds = 253;

  struct Received {
    nlohmann::json message;
    std::vector<UniqueFd> fds;
  };

  // A connected pair (socketpair), both ends close-on-exec.
  static Result<std::pair<MessageChannel, MessageChannel>> make_pair();

  MessageChannel() = default;
  explicit MessageChannel(UniqueFd socket) : socket_(std::move(socket)) {}

  int descriptor() const { return socket_.get(); }
  bool valid() const { return socket_.valid(); }
  UniqueFd release() { return std::move(socket_); }

  // Sends one message (with fds, which stay owned by the caller). kInvalidArgument when the
  // message is too large; kIo when the peer is gone.
  [[nodiscard]] Result<void> send(const nlohmann::json& message, std::span<const int> fds = {});

  // Waits for one message (forever without a timeout). nullopt when the peer closed the
  // channel or the timeout passed without a message; kCorrupt for a truncated, oversized or
  // malformed message (the channel is then unusable: the peer broke the protocol).
  [[nodiscard]] Result<std::optional<Received>> receive(
      std::optional<std::chrono::milliseconds> timeout = std::nullopt);

 private:
  UniqueFd socket_;
};

}  // namespace lamina
