#include "virtio/virtio_net.h"

#include <fmt/format.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/byte_order.h"

namespace lamina::virtio {

namespace {

// Section 5.1.6: offsets in struct virtio_net_hdr.
constexpr size_t kHeaderGsoType = 1;
constexpr size_t kHeaderNumBuffers = 10;
constexpr uint32_t kStateVersion = 2;

}  // namespace

Result<std::unique_ptr<VirtioNet>> VirtioNet::create(std::unique_ptr<net::FramePort> port,
                                                     net::MacAddress mac) {
  if (mac.is_group()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("virtio-net: {} is a group address, not a NIC's", mac.to_string()));
  }
  auto wakeup = WakeupEvent::create("virtio-net");
  if (!wakeup) return fail(wakeup.error());
  return std::unique_ptr<VirtioNet>(new VirtioNet(std::move(port), mac, std::move(*wakeup)));
}

VirtioNet::VirtioNet(std::unique_ptr<net::FramePort> port, net::MacAddress mac,
                     WakeupEvent wakeup)
    : port_(std::move(port)),
      mac_(mac),
      wakeup_(std::move(wakeup)),
      tx_frame_(net::kMaxFrameSize),
      rx_frame_(kNetHeaderSize + net::kMaxFrameSize) {}

VirtioNet::~VirtioNet() { reset(); }

uint64_t VirtioNet::device_features() const {
  return kNetFeatureMac | kNetFeatureStatus | kNetFeatureMergeableRxBuffers;
}

void VirtioNet::read_config(uint32_t offset, std::span<std::byte> data) {
  // Section 5.1.4: mac[6], le16 status, le16 max_virtqueue_pairs.
  std::array<std::byte, kConfigSize> config{};
  std::memcpy(config.data(), mac_.bytes().data(), 6);
  store_le<uint16_t>(config.data() + 6, status_.load());
  store_le<uint16_t>(config.data() + 8, 1);
  if (offset >= config.size()) return;
  std::memcpy(data.data(), config.data() + offset,
              std::min<size_t>(data.size(), config.size() - offset));
}

Result<void> VirtioNet::activate(VirtioTransport& transport, uint64_t features) {
  std::lock_guard lock(control_mutex_);
  if (worker_.joinable()) {
    return fail(ErrorCode::kInternal, "virtio-net: activated twice without a reset");
  }
  transport_ = &transport;
  mergeable_ = (features & kNetFeatureMergeableRxBuffers) != 0;
  // Frames in hand are kept: reset() already dropped those of an old session, and load() may
  // have restored some.
  rx_starved_ = false;
  rx_chains_.clear();
  io_paused_ = false;
  start_worker();
  return {};
}

void VirtioNet::start_worker() {
  worker_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
}

void VirtioNet::pause_io() {
  std::lock_guard lock(control_mutex_);
  if (!worker_.joinable()) return;
  worker_.request_stop();
  wakeup_.signal();
  worker_.join();
  worker_ = std::jthread();
  io_paused_ = true;
  // The chains in hand are the queue's last pops, oldest first (take_receive_chain takes from
  // them before popping more, and puts gathered ones back in order).
  if (!rx_chains_.empty() && transport_ != nullptr) {
    if (Virtqueue* queue = transport_->queue(kReceiveQueue)) {
      queue->give_back(static_cast<uint16_t>(rx_chains_.size()));
    }
  }
  rx_chains_.clear();
  rx_starved_ = false;
}

void VirtioNet::resume_io() {
  std::lock_guard lock(control_mutex_);
  if (!io_paused_) return;
  io_paused_ = false;
  if (transport_ != nullptr) start_worker();
}

void VirtioNet::queue_notify(uint16_t /*index*/) { wakeup_.signal(); }

void VirtioNet::reset() {
  std::lock_guard lock(control_mutex_);
  if (worker_.joinable()) {
    worker_.request_stop();
    queue_notify(0);
    worker_.join();
  }
  worker_ = std::jthread();
  transport_ = nullptr;
  io_paused_ = false;
  // Frames in hand belong to the old driver's session; a reset loses them like a NIC reset.
  if (tx_length_ != 0) transmit_dropped_++;
  if (rx_length_ != 0) receive_dropped_++;
  tx_length_ = 0;
  rx_length_ = 0;
  rx_chains_.clear();
  rx_starved_ = false;
}

void VirtioNet::run(std::stop_token stop) {
  bool failed = false;
  bool more_work = false;
  while (!stop.stop_requested()) {
    if (announce_pending_.exchange(false)) {
      announce_rounds_left_ = kAnnounceRounds;
      next_announce_ = std::chrono::steady_clock::now();
    }
    int timeout_ms = more_work ? 0 : -1;
    if (announce_rounds_left_ > 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_announce_) {
        if (port_alive_) announce();
        --announce_rounds_left_;
        if (announce_rounds_left_ > 0) {
          next_announce_ = now + std::chrono::milliseconds(
                                     kAnnounceGapsMs[kAnnounceRounds - 1 - announce_rounds_left_]);
        }
      }
      if (announce_rounds_left_ > 0 && !more_work) {
        const auto wait = std::chrono::ceil<std::chrono::milliseconds>(
            next_announce_ - std::chrono::steady_clock::now());
        timeout_ms = static_cast<int>(std::max<int64_t>(wait.count(), 0));
      }
    }
    pollfd polled[2] = {{wakeup_.fd(), POLLIN, 0}, {port_->poll_fd(), 0, 0}};
    nfds_t count = 1;
    if (port_alive_ && !failed) {
      if (!rx_starved_ && rx_length_ == 0) polled[1].events |= POLLIN;
      if (tx_length_ != 0) polled[1].events |= POLLOUT;
      count = 2;
    }
    if (::poll(polled, count, timeout_ms) < 0 && errno != EINTR) {
      backend_failed(Error(ErrorCode::kIo, fmt::format("poll: {}", std::strerror(errno))));
      continue;
    }
    if ((polled[0].revents & POLLIN) != 0) {
      wakeup_.clear();
      // A kick may mean new receive buffers.
      rx_starved_ = false;
    }
    if (stop.stop_requested()) break;
    if (count == 2 && (polled[1].revents & (POLLHUP | POLLERR | POLLNVAL)) != 0 &&
        (polled[1].revents & POLLIN) == 0) {
      backend_failed(
          Error(ErrorCode::kIo, fmt::format("{}: the backend hung up", port_->description())));
    }
    if (failed) continue;
    more_work = false;
    Virtqueue* transmit_queue = transport_->queue(kTransmitQueue);
    Virtqueue* receive_queue = transport_->queue(kReceiveQueue);
    bool transmit_pushed = false;
    bool receive_pushed = false;
    if (transmit_queue != nullptr && !transmit(*transmit_queue, transmit_pushed, more_work)) {
      failed = true;
    }
    if (!failed && receive_queue != nullptr &&
        !receive(*receive_queue, receive_pushed, more_work)) {
      failed = true;
    }
    if (transmit_pushed && transmit_queue->should_signal())
      transport_->signal_queue(kTransmitQueue);
    if (receive_pushed && receive_queue->should_signal()) transport_->signal_queue(kReceiveQueue);
  }
}

bool VirtioNet::send_held_frame() {
  if (!port_alive_) {
    transmit_dropped_++;
    tx_length_ = 0;
    return true;
  }
  auto sent = port_->send(std::span<const std::byte>(tx_frame_.data(), tx_length_));
  if (!sent) {
    transmit_dropped_++;
    tx_length_ = 0;
    // kInvalidArgument cannot happen (sizes were checked); anything else is the backend.
    backend_failed(sent.error());
    return true;
  }
  if (*sent == net::SendStatus::kBusy) return false;
  transmitted_frames_++;
  tx_length_ = 0;
  return true;
}

bool VirtioNet::transmit(Virtqueue& queue, bool& pushed, bool& more_work) {
  if (tx_length_ != 0 && !send_held_frame()) return true;
  queue.set_notifications(false);
  for (uint32_t taken = 0;; ++taken) {
    if (taken == kQueueSize) {
      // Let the receive side have a turn; come back without waiting for a kick.
      more_work = true;
      return true;
    }
    auto popped = queue.pop();
    if (!popped) return driver_error(popped.error());
    if (!*popped) {
      // Section 2.7.10: re-enable, then look once more, so a buffer added meanwhile is seen.
      queue.set_notifications(true);
      if (queue.has_available()) continue;
      return true;
    }
    const DescriptorChain& chain = **popped;
    size_t length = 0;
    if (chain.readable_length < kNetHeaderSize + net::kMinFrameSize ||
        chain.readable_length - kNetHeaderSize > net::kMaxFrameSize) {
      drop_transmit(
          fmt::format("a {}-byte transmit buffer, not a header and a 14-65549 byte "
                      "frame",
                      chain.readable_length));
    } else {
      std::array<std::byte, kNetHeaderSize> header{};
      queue.copy_from(chain, 0, header);
      // No GSO feature was offered, so a request to segment is a driver bug (section 5.1.6.2).
      if (static_cast<uint8_t>(header[kHeaderGsoType]) != kNetGsoNone) {
        drop_transmit("a frame asking for segmentation, which was not negotiated");
      } else {
        length = chain.readable_length - kNetHeaderSize;
        queue.copy_from(chain, kNetHeaderSize, std::span<std::byte>(tx_frame_.data(), length));
      }
    }
    if (auto done = queue.push(chain.head, 0); !done) return driver_error(done.error());
    pushed = true;
    if (length == 0) continue;
    tx_length_ = length;
    // Busy backend: keep this frame, stop taking more, wait for POLLOUT (run() polls for it).
    if (!send_held_frame()) return true;
  }
}

bool VirtioNet::receive(Virtqueue& queue, bool& pushed, bool& more_work) {
  for (uint32_t delivered = 0;; ++delivered) {
    if (delivered == kQueueSize) {
      more_work = true;
      return true;
    }
    if (rx_length_ == 0) {
      if (!port_alive_) return true;
      auto got = port_->receive(std::span<std::byte>(rx_frame_).subspan(kNetHeaderSize));
      if (!got) {
        backend_failed(got.error());
        return true;
      }
      if (!*got) return true;
      rx_length_ = kNetHeaderSize + **got;
    }
    auto done = deliver(queue, pushed);
    if (!done) return driver_error(done.error());
    if (!*done) {
      rx_starved_ = true;
      return true;
    }
    rx_length_ = 0;
  }
}

Result<std::optional<DescriptorChain>> VirtioNet::take_receive_chain(Virtqueue& queue) {
  if (!rx_chains_.empty()) {
    DescriptorChain chain = std::move(rx_chains_.front());
    rx_chains_.pop_front();
    return chain;
  }
  auto popped = queue.pop();
  if (!popped || *popped) return popped;
  queue.set_notifications(true);
  if (!queue.has_available()) return popped;
  return queue.pop();
}

Result<bool> VirtioNet::deliver(Virtqueue& queue, bool& pushed) {
  // Section 5.1.6.4: flags 0 and GSO_NONE (no offloads negotiated); num_buffers set below.
  std::memset(rx_frame_.data(), 0, kNetHeaderSize);
  std::span<const std::byte> bytes(rx_frame_.data(), rx_length_);
  if (!mergeable_) {
    auto chain = take_receive_chain(queue);
    if (!chain) return fail(chain.error());
    if (!*chain) return false;
    if ((*chain)->writable_length < bytes.size()) {
      drop_receive(fmt::format("a {}-byte frame does not fit a {}-byte receive buffer",
                               bytes.size() - kNetHeaderSize, (*chain)->writable_length));
      rx_chains_.push_front(std::move(**chain));
      return true;
    }
    store_le<uint16_t>(rx_frame_.data() + kHeaderNumBuffers, 1);
    queue.copy_to(**chain, 0, bytes);
    if (auto done = queue.push((*chain)->head, static_cast<uint32_t>(bytes.size())); !done) {
      return fail(done.error());
    }
    pushed = true;
    received_frames_++;
    return true;
  }
  // Section 5.1.6.4.2: with MRG_RXBUF a frame may span several chains, num_buffers of them.
  std::vector<DescriptorChain> gathered;
  uint64_t room = 0;
  while (room < bytes.size()) {
    if (gathered.size() == queue.layout().size) {
      // Every buffer the queue can hold would not do: no kick could ever make room.
      drop_receive(fmt::format("a {}-byte frame does not fit the whole receive queue",
                               bytes.size() - kNetHeaderSize));
      for (auto it = gathered.rbegin(); it != gathered.rend(); ++it) {
        rx_chains_.push_front(std::move(*it));
      }
      return true;
    }
    auto chain = take_receive_chain(queue);
    if (!chain) return fail(chain.error());
    if (!*chain) {
      for (auto it = gathered.rbegin(); it != gathered.rend(); ++it) {
        rx_chains_.push_front(std::move(*it));
      }
      return false;
    }
    if ((*chain)->writable_length == 0) {
      return fail(ErrorCode::kGuestFatal, "virtio-net: a receive buffer with no writable space");
    }
    room += (*chain)->writable_length;
    gathered.push_back(std::move(**chain));
  }
  store_le<uint16_t>(rx_frame_.data() + kHeaderNumBuffers, static_cast<uint16_t>(gathered.size()));
  size_t offset = 0;
  for (const auto& chain : gathered) {
    size_t part = std::min<uint64_t>(chain.writable_length, bytes.size() - offset);
    queue.copy_to(chain, 0, bytes.subspan(offset, part));
    offset += part;
    if (auto done = queue.push(chain.head, static_cast<uint32_t>(part)); !done) {
      return fail(done.error());
    }
  }
  pushed = true;
  received_frames_++;
  return true;
}

void VirtioNet::drop_transmit(std::string_view why) {
  transmit_dropped_++;
  if (log_limiter_.allow()) log_warn("virtio-net ({}): dropped {}", port_->description(), why);
}

void VirtioNet::drop_receive(std::string_view why) {
  receive_dropped_++;
  if (log_limiter_.allow()) log_warn("virtio-net ({}): dropped {}", port_->description(), why);
}

void VirtioNet::announce() {
  // RFC 903: a "request reverse" (opcode 3) with the card's address as sender and target.
  std::array<std::byte, 60> frame{};  // the Ethernet minimum without its FCS
  const auto mac = std::as_bytes(std::span(mac_.bytes()));
  std::fill_n(frame.begin(), 6, std::byte{0xff});
  std::copy(mac.begin(), mac.end(), frame.begin() + 6);
  store_be<uint16_t>(frame.data() + 12, 0x8035);  // RARP
  store_be<uint16_t>(frame.data() + 14, 1);       // Ethernet
  store_be<uint16_t>(frame.data() + 16, 0x0800);  // IPv4
  frame[18] = std::byte{6};
  frame[19] = std::byte{4};
  store_be<uint16_t>(frame.data() + 20, 3);
  std::copy(mac.begin(), mac.end(), frame.begin() + 22);
  std::copy(mac.begin(), mac.end(), frame.begin() + 32);
  auto sent = port_->send(frame);
  if (!sent && log_limiter_.allow()) {
    log_warn("virtio-net ({}): the announcement after a restore failed: {}", port_->description(),
             sent.error().message());
  }
}

void VirtioNet::backend_failed(const Error& error) {
  if (!port_alive_) return;
  port_alive_ = false;
  log_warn("virtio-net: {}; the guest's link is down", error.message());
  status_.fetch_and(static_cast<uint16_t>(~kNetStatusLinkUp));
  if (transport_ != nullptr) transport_->signal_config_change();
  if (backend_failure_listener_) backend_failure_listener_(error);
}

void VirtioNet::replace_backend(const std::function<void()>& swap) {
  std::lock_guard lock(control_mutex_);
  const bool running = worker_.joinable();
  if (running) {
    worker_.request_stop();
    wakeup_.signal();
    worker_.join();
    worker_ = std::jthread();
  }
  swap();
  // A frame held for the old backend goes to the new one; the link is up again.
  port_alive_ = true;
  status_.fetch_or(kNetStatusLinkUp);
  announce_pending_ = true;
  log_line(LogLevel::kInfo, fmt::format("virtio-net ({}): connected to a new backend; the guest's link is up", port_->description()));
  if (transport_ != nullptr) transport_->signal_config_change();
  if (running) start_worker();
}

bool VirtioNet::driver_error(const Error& error) {
  transport_->device_error(error.message());
  return false;
}

VirtioNetStats VirtioNet::stats() const {
  return {transmitted_frames_.load(), transmit_dropped_.load(), received_frames_.load(),
          receive_dropped_.load()};
}

void VirtioNet::save(StateWriter& writer) const {
  writer.begin_section("virtio-net", kStateVersion);
  writer.put_bytes(std::as_bytes(std::span(mac_.bytes())));
  writer.put_bool(link_up());
  // v2: frames in flight. The I/O thread is stopped (pause_io) or was never started here.
  writer.put_bytes(std::span<const std::byte>(tx_frame_.data(), tx_length_));
  writer.put_bytes(std::span<const std::byte>(rx_frame_.data(), rx_length_));
  writer.end_section();
}

Result<void> VirtioNet::load(StateReader& reader) {
  std::lock_guard lock(control_mutex_);
  auto version = reader.begin_section("virtio-net");
  if (!version) return fail(version.error());
  if (*version != 1 && *version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("virtio-net: state version {} is not known", *version));
  }
  std::array<std::byte, 6> mac{};
  if (auto got = reader.get_bytes(mac); !got) return got;
  auto link = reader.get_bool();
  if (!link) return fail(link.error());
  auto address = net::MacAddress::from_bytes(std::span<const std::byte, 6>(mac));
  if (address.is_group()) {
    return fail(ErrorCode::kCorrupt, "virtio-net: the saved MAC address is a group address");
  }
  std::vector<std::byte> transmit_frame;
  std::vector<std::byte> receive_frame;
  if (*version >= 2) {
    auto tx = reader.get_blob(net::kMaxFrameSize);
    if (!tx) return fail(tx.error());
    auto rx = reader.get_blob(kNetHeaderSize + net::kMaxFrameSize);
    if (!rx) return fail(rx.error());
    // A held frame is a whole Ethernet frame; a received one has its header in front.
    if ((!tx->empty() && tx->size() < net::kMinFrameSize) ||
        (!rx->empty() && rx->size() < kNetHeaderSize + net::kMinFrameSize)) {
      return fail(ErrorCode::kCorrupt, "virtio-net: a saved frame in flight is too short");
    }
    transmit_frame = std::move(*tx);
    receive_frame = std::move(*rx);
  }
  if (auto done = reader.end_section(); !done) return done;
  mac_ = address;
  std::copy(transmit_frame.begin(), transmit_frame.end(), tx_frame_.begin());
  tx_length_ = transmit_frame.size();
  std::copy(receive_frame.begin(), receive_frame.end(), rx_frame_.begin());
  rx_length_ = receive_frame.size();
  // The backend of this run decides whether the link can be up.
  status_.store(*link && port_alive_ ? kNetStatusLinkUp : 0);
  announce_pending_.store(true);
  return {};
}

}  // namespace lamina::virtio
