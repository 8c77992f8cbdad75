#pragma once
// FramePort: the host side of one virtual network cable. A virtio-net device (or any other
// NIC model) sends the Ethernet frames its guest transmits through send() and delivers what
// receive() returns to its guest. Backends: the Lamina virtual switch (switch_port.h) and a
// host tap interface (tap_port.h); open_frame_port() in network_option.h picks one from the
// `--net` option.
//
// Frames are plain Ethernet frames: destination MAC, source MAC, EtherType/length, payload —
// no preamble, no FCS, no virtio-net header (the device adds and strips that). A frame is
// kMinFrameSize (14, a bare header) to kMaxFrameSize (65535 + 14) bytes. Backends do not pad
// short frames to 60 bytes and do not check the payload.
//
// Built for a device whose I/O runs on its own thread:
//   - poll_fd() is a file descriptor to poll(2) together with the device's own eventfd.
//     POLLIN: receive() may have a frame. POLLOUT: send() may accept a frame again after it
//     said kBusy. POLLHUP/POLLERR: the backend is gone; the next send()/receive() says why.
//   - send() and receive() never block.
//
//   Device I/O loop, in outline:
//     std::vector<std::byte> buffer(kMaxFrameSize);
//     for (;;) {
//       poll({port.poll_fd(), POLLIN | (waiting_to_send ? POLLOUT : 0)}, {kick_eventfd, POLLIN});
//       while (auto frame = port.receive(buffer); frame && *frame) deliver(buffer, **frame);
//       ... send() guest frames until one says kBusy (keep it, wait for POLLOUT) ...
//     }
//
// Ownership: the port owns its fd and closes it when destroyed (for the switch this leaves
// the switch; the switch forgets the port's MAC addresses). Thread-safety: send() and
// receive() may be called from one thread at a time each (one sender and one receiver thread
// may run concurrently); stats() and description() from any thread.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/error.h"

namespace lamina::net {

inline constexpr size_t kEthernetHeaderSize = 14;  // IEEE 802.3: 6 + 6 + 2 bytes
inline constexpr size_t kMinFrameSize = kEthernetHeaderSize;
inline constexpr size_t kMaxFrameSize = 65535 + kEthernetHeaderSize;

// What send() did with a frame.
enum class SendStatus {
  // The backend took the frame. It may still drop it later like a real network would (a full
  // queue in the switch, a tap that is down); such drops are counted, never silent.
  kSent,
  // The backend's queue is full and nothing was sent: poll poll_fd() for POLLOUT and send the
  // same frame again (back-pressure), or drop it and count it.
  kBusy,
};

// Counters of one port, from the device's point of view (sent = guest to network).
struct FramePortStats {
  uint64_t sent_frames = 0;
  uint64_t sent_bytes = 0;
  uint64_t received_frames = 0;
  uint64_t received_bytes = 0;
  // Frames the backend dropped on this host: receive() found a frame larger than the buffer,
  // or the host refused a sent frame (e.g. a tap interface that is down).
  uint64_t dropped_frames = 0;
};

class FramePort {
 public:
  virtual ~FramePort() = default;

  // "switch:lab" or "tap:tap0", for logs and errors.
  virtual const std::string& description() const = 0;

  // The descriptor to poll (see above). Valid for the port's lifetime; never read or write it.
  virtual int poll_fd() const = 0;

  // Sends one frame. kInvalidArgument when frame.size() is outside
  // [kMinFrameSize, kMaxFrameSize] (nothing is sent); kIo when the backend is gone (the switch
  // daemon died, the tap interface was deleted): the port is then dead for good.
  [[nodiscard]] virtual Result<SendStatus> send(std::span<const std::byte> frame) = 0;

  // Copies the next waiting frame into `buffer` and returns its length, or std::nullopt when
  // no frame is waiting now. A frame longer than `buffer` is dropped and counted (pass
  // kMaxFrameSize bytes never to lose one). kIo when the backend is gone.
  [[nodiscard]] virtual Result<std::optional<size_t>> receive(std::span<std::byte> buffer) = 0;

  FramePortStats stats() const {
    return {sent_frames_.load(std::memory_order_relaxed),
            sent_bytes_.load(std::memory_order_relaxed),
            received_frames_.load(std::memory_order_relaxed),
            received_bytes_.load(std::memory_order_relaxed),
            dropped_frames_.load(std::memory_order_relaxed)};
  }

 protected:
  void count_sent(size_t bytes) {
    sent_frames_.fetch_add(1, std::memory_order_relaxed);
    sent_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  }
  void count_received(size_t bytes) {
    received_frames_.fetch_add(1, std::memory_order_relaxed);
    received_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  }
  void count_dropped() { dropped_frames_.fetch_add(1, std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> sent_frames_{0};
  std::atomic<uint64_t> sent_bytes_{0};
  std::atomic<uint64_t> received_frames_{0};
  std::atomic<uint64_t> received_bytes_{0};
  std::atomic<uint64_t> dropped_frames_{0};
};

// Checks a frame's size for send(): kInvalidArgument naming the size when it is out of range.
[[nodiscard]] Result<void> check_frame_size(std::span<const std::byte> frame);

}  // namespace lamina::net
