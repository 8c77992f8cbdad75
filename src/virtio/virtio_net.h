#pragma once
// VirtioNet: the virtio network device (virtio 1.2 section 5.1) on a net::FramePort (a Lamina
// virtual switch port or a tap), so `lamina run --net switch:NAME` gives the guest a NIC.
// Queues: 0 receiveq, 1 transmitq (no control queue, one queue pair). Offers
// VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS and VIRTIO_NET_F_MRG_RXBUF; no checksum or
// segmentation offloads, so every frame is a plain Ethernet frame of at most 65549 bytes.
//
// Every buffer carries the 12-byte struct virtio_net_hdr (section 5.1.6; num_buffers is always
// present with VIRTIO_F_VERSION_1). Transmit: the header is checked and stripped, the frame
// sent; a chain too short for a header and an Ethernet header, too long, or asking for
// segmentation that was not negotiated is dropped, counted and logged (rate-limited): a guest's
// bad frame costs it that frame only. Receive: a frame goes into one chain, or with
// MRG_RXBUF across several (num_buffers says how many); without MRG_RXBUF a frame larger than
// the chain is dropped and counted and the chain kept for the next frame.
//
// I/O runs on the device's own thread, started by activate() and stopped by reset(): it polls
// the port's fd together with an eventfd that queue_notify() signals. Back-pressure both ways:
// when the guest has no receive buffers the thread stops reading the port (the backend then
// queues or drops and counts, like a switch port); when the backend is busy the thread keeps
// the one frame in hand and waits for POLLOUT before taking more from the transmit queue. When
// the backend dies (the switch daemon went away), the link goes down (status bit, config
// interrupt) and transmitted frames are dropped and counted, until replace_backend() plugs the
// card into a new one (laminad reconnects the switch) and the link comes up again.
//
// Ownership: owns the FramePort and the I/O thread; borrows the transport between activate()
// and reset(). Thread-safety: as VirtioDevice says; read_config may race with the I/O thread
// (the status is atomic), and stats() may be called from any thread.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "base/wakeup_event.h"
#include "net/frame_port.h"
#include "net/mac_address.h"
#include "virtio/virtio_device.h"

namespace lamina::virtio {

// Section 5.1.3 feature bits.
inline constexpr uint64_t kNetFeatureMac = uint64_t{1} << 5;
inline constexpr uint64_t kNetFeatureMergeableRxBuffers = uint64_t{1} << 15;
inline constexpr uint64_t kNetFeatureStatus = uint64_t{1} << 16;
// Section 5.1.4: status bits.
inline constexpr uint16_t kNetStatusLinkUp = 1;
// Section 5.1.6: struct virtio_net_hdr with num_buffers (VIRTIO_F_VERSION_1).
inline constexpr size_t kNetHeaderSize = 12;
inline constexpr uint8_t kNetGsoNone = 0;

struct VirtioNetStats {
  uint64_t transmitted_frames = 0;  // guest to backend
  uint64_t transmit_dropped = 0;    // bad frames from the guest, or the backend was gone
  uint64_t received_frames = 0;     // backend to guest
  uint64_t receive_dropped = 0;     // did not fit the guest's buffer
};

class VirtioNet final : public VirtioDevice {
 public:
  static constexpr uint16_t kReceiveQueue = 0;
  static constexpr uint16_t kTransmitQueue = 1;
  static constexpr uint16_t kQueueSize = 256;
  // mac[6], status, max_virtqueue_pairs (section 5.1.4).
  static constexpr uint32_t kConfigSize = 10;

  // Fails only when no eventfd can be made. `mac` must be a unicast address.
  static Result<std::unique_ptr<VirtioNet>> create(std::unique_ptr<net::FramePort> port,
                                                   net::MacAddress mac);
  ~VirtioNet() override;
  VirtioNet(const VirtioNet&) = delete;
  VirtioNet& operator=(const VirtioNet&) = delete;

  std::string_view name() const override { return "virtio-net"; }
  DeviceType type() const override { return DeviceType::kNet; }
  uint64_t device_features() const override;
  uint16_t queue_count() const override { return 2; }
  uint16_t queue_max_size(uint16_t /*index*/) const override { return kQueueSize; }
  uint32_t config_size() const override { return kConfigSize; }
  void read_config(uint32_t offset, std::span<std::byte> data) override;

  [[nodiscard]] Result<void> activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index) override;
  void reset() override;

  // Quiesce: the I/O thread is stopped with frames in hand kept, and receive chains taken but
  // not filled are given back to the queue; resume_io() starts the thread again.
  void pause_io() override;
  void resume_io() override;

  // Section "virtio-net" v2: the MAC address, the link state and the frames in flight (the
  // frame waiting for a busy backend, the received frame waiting for guest buffers), so a
  // checkpoint taken while paused loses none. v1 (no frames) still loads.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

  // Called once, on the I/O thread, when the backend fails (the link has just gone down): a
  // worker tells laminad, which may connect a new backend (replace_backend). Set before the
  // device is activated; it must not block.
  void set_backend_failure_listener(std::function<void(const Error&)> listener) {
    backend_failure_listener_ = std::move(listener);
  }
  // Plugs the card into a new backend: the I/O thread stops, `swap` runs (it replaces what
  // the card's port forwards to, net::ReplaceablePort), and the link comes up again (config
  // interrupt) with one RARP announcement so learning switches find the card's new port.
  void replace_backend(const std::function<void()>& swap);

  // A restored card's RARP announcements (see announce()).
  static constexpr int kAnnounceRounds = 5;
  static constexpr std::array<int, kAnnounceRounds - 1> kAnnounceGapsMs = {50, 150, 250, 350};

  net::MacAddress mac() const { return mac_; }
  bool link_up() const { return (status_.load() & kNetStatusLinkUp) != 0; }
  VirtioNetStats stats() const;
  const net::FramePort& port() const { return *port_; }

 private:
  VirtioNet(std::unique_ptr<net::FramePort> port, net::MacAddress mac, WakeupEvent wakeup);

  void run(std::stop_token stop);
  void start_worker();
  bool io_paused_ = false;  // pause_io() stopped the thread; guarded by control_mutex_
  // Each serves its queue until empty, blocked, or a batch of kQueueSize (then more_work);
  // false once the driver broke the protocol (the transport was told).
  bool transmit(Virtqueue& queue, bool& pushed, bool& more_work);
  bool receive(Virtqueue& queue, bool& pushed, bool& more_work);
  // Sends the frame in tx_frame_; false when the backend is busy (the frame stays in hand).
  bool send_held_frame();
  void drop_transmit(std::string_view why);
  void drop_receive(std::string_view why);
  // Puts rx_frame_ (header + frame of rx_length_ bytes) into the guest's buffers. false: no
  // buffers now (the frame stays in hand). Fails on a driver error.
  Result<bool> deliver(Virtqueue& queue, bool& pushed);
  Result<std::optional<DescriptorChain>> take_receive_chain(Virtqueue& queue);
  void backend_failed(const Error& error);
  bool driver_error(const Error& error);
  // A restored card (checkpoint, live migration) may sit behind another switch port or host
  // now: a broadcast RARP from its MAC, as QEMU's self-announce sends, teaches learning
  // switches and bridges where it is before the guest says anything. kAnnounceRounds of them,
  // the first at once and then after kAnnounceGaps (QEMU's defaults: 5 rounds, 50 ms then
  // 100 ms steps), so one lost frame does not leave a switch pointing at the old port.
  void announce();

  std::unique_ptr<net::FramePort> port_;
  net::MacAddress mac_;
  WakeupEvent wakeup_;
  std::atomic<uint16_t> status_{kNetStatusLinkUp};
  std::atomic<bool> announce_pending_{false};  // set by load(), sent by the I/O thread
  int announce_rounds_left_ = 0;                 // I/O thread: announcements still to send
  std::chrono::steady_clock::time_point next_announce_;  // I/O thread: when the next one goes

  std::mutex control_mutex_;  // serializes activate/reset/load/destruction
  VirtioTransport* transport_ = nullptr;
  bool mergeable_ = false;  // VIRTIO_NET_F_MRG_RXBUF was negotiated

  // I/O thread state (touched only by the I/O thread while it runs).
  std::vector<std::byte> tx_frame_;
  size_t tx_length_ = 0;                   // a frame the backend said kBusy to; 0: none
  std::vector<std::byte> rx_frame_;        // header + frame
  size_t rx_length_ = 0;                   // bytes of header + frame in hand; 0: none
  bool rx_starved_ = false;                // no guest buffers: stop reading the port until a kick
  std::deque<DescriptorChain> rx_chains_;  // taken from the queue, not yet filled
  std::atomic<bool> port_alive_{true};     // false once the backend failed, until replace_backend
  std::function<void(const Error&)> backend_failure_listener_;

  std::atomic<uint64_t> transmitted_frames_{0};
  std::atomic<uint64_t> transmit_dropped_{0};
  std::atomic<uint64_t> received_frames_{0};
  std::atomic<uint64_t> receive_dropped_{0};
  RateLimiter log_limiter_;

  std::jthread worker_;
};

}  // namespace lamina::virtio
