// libFuzzer target: virtio-net's request parsing (virtio 1.2 section 5.1.6). The input is the
// guest's RAM (both split rings at fixed places, their descriptors, virtio_net_hdr and frame
// buffers anywhere) plus what the host side does: frames arriving from the network (sizes from
// the input, up to the largest frame), a backend that says "busy" to every other frame, and one
// that dies after its frames. The device's own I/O thread serves the queues; the target waits
// until the device has gone quiet, then resets it. Nothing may crash or hang, and every frame
// the device sends must be a valid Ethernet frame size. make_virtio_net_seed.py writes a seed
// input with one receive buffer and one transmitted frame.

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "../recording_transport.h"
#include "base/guest_memory.h"
#include "net/frame_port.h"
#include "base/unique_fd.h"
#include "virtio/virtio_net.h"

namespace {

using namespace lamina;

constexpr uint64_t kRamSize = 1 << 20;
// Ring placement, compact so short inputs reach both queues (queue size at most 16: 256 bytes
// of descriptors, then the available ring at +0x100 and the used ring at +0x140).
constexpr uint64_t kReceiveRings = 0x0;
constexpr uint64_t kTransmitRings = 0x200;

// The host end: frames queued by the target arrive; sent frames are checked and counted.
// poll_fd() is an eventfd that is readable while frames wait. Thread-safety: one sender and
// one receiver thread (the device's) and the target's thread adding frames, under mutex_.
class MemoryPort final : public net::FramePort {
 public:
  MemoryPort(bool busy_every_other, bool dies) : busy_every_other_(busy_every_other), dies_(dies) {}
  const std::string& description() const override { return description_; }
  int poll_fd() const override { return event_.get(); }

  Result<net::SendStatus> send(std::span<const std::byte> frame) override {
    if (frame.size() < net::kMinFrameSize || frame.size() > net::kMaxFrameSize) std::abort();
    std::lock_guard lock(mutex_);
    if (busy_every_other_ && (++sends_ & 1) != 0) return net::SendStatus::kBusy;
    count_sent(frame.size());
    return net::SendStatus::kSent;
  }

  Result<std::optional<size_t>> receive(std::span<std::byte> buffer) override {
    std::lock_guard lock(mutex_);
    while (!frames_.empty()) {
      std::vector<std::byte> frame = std::move(frames_.front());
      frames_.pop_front();
      if (frame.size() > buffer.size()) {
        count_dropped();
        continue;
      }
      std::memcpy(buffer.data(), frame.data(), frame.size());
      count_received(frame.size());
      return frame.size();
    }
    uint64_t count = 0;
    (void)::read(event_.get(), &count, sizeof count);
    if (dies_) return fail(ErrorCode::kIo, "fuzz backend gone");
    return std::nullopt;
  }

  void add_frame(std::vector<std::byte> frame) {
    std::lock_guard lock(mutex_);
    frames_.push_back(std::move(frame));
    uint64_t one = 1;
    (void)::write(event_.get(), &one, sizeof one);
  }

 private:
  std::string description_ = "fuzz";
  UniqueFd event_{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
  bool busy_every_other_;
  bool dies_;
  std::mutex mutex_;
  uint64_t sends_ = 0;
  std::deque<std::vector<std::byte>> frames_;
};

virtio::VirtqueueLayout layout_at(uint64_t base, uint16_t size) {
  virtio::VirtqueueLayout layout;
  layout.size = size;
  layout.descriptor_table = base;
  layout.driver_area = base + 0x100;
  layout.device_area = base + 0x140;
  return layout;
}

// A snapshot of everything that moves while the device works.
std::vector<uint64_t> progress(const virtio::VirtioNet& device, const MemoryPort& port,
                               const virtio::testing::RecordingTransport& transport) {
  auto device_stats = device.stats();
  auto port_stats = port.stats();
  return {device_stats.transmitted_frames, device_stats.transmit_dropped,
          device_stats.received_frames,    device_stats.receive_dropped,
          port_stats.sent_frames,          port_stats.received_frames,
          port_stats.dropped_frames,       static_cast<uint64_t>(transport.signals_[0].load()),
          static_cast<uint64_t>(transport.signals_[1].load())};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  static auto memory = GuestMemory::create({{0, kRamSize}});
  if (!memory) std::abort();
  const uint8_t flags = data[0];
  const auto queue_size = static_cast<uint16_t>(1u << (data[1] % 5));
  const size_t frame_count = data[2] % 8;
  const uint8_t length_seed = data[3];
  const size_t copied = std::min<size_t>(size - 4, kRamSize);
  // Same input, same RAM: what earlier inputs left is cleared.
  std::memset(memory->host_pointer(0, kRamSize), 0, kRamSize);
  std::memcpy(memory->host_pointer(0, kRamSize), data + 4, copied);
  virtio::DmaMemory dma(*memory);
  virtio::testing::RecordingTransport transport(dma);

  auto owned_port = std::make_unique<MemoryPort>(flags & 4, flags & 8);
  MemoryPort& port = *owned_port;
  auto device = virtio::VirtioNet::create(std::move(owned_port),
                                          net::MacAddress({0x52, 0x54, 0, 1, 2, 3}));
  if (!device) std::abort();
  const bool event_index = flags & 16;
  const bool indirect = flags & 32;
  auto receive = virtio::Virtqueue::create(dma, layout_at(kReceiveRings, queue_size), event_index,
                                           indirect);
  auto transmit = virtio::Virtqueue::create(dma, layout_at(kTransmitRings, queue_size),
                                            event_index, indirect);
  if (!receive || !transmit) return 0;
  transport.queues_[0] = std::move(*receive);
  transport.queues_[1] = std::move(*transmit);
  uint64_t features = virtio::kFeatureVersion1 | virtio::kNetFeatureMac | virtio::kNetFeatureStatus;
  if (flags & 1) features |= virtio::kNetFeatureMergeableRxBuffers;
  if (!(*device)->activate(transport, features)) return 0;

  // Frames from the network: sizes from the input, now and then the largest one.
  for (size_t i = 0; i < frame_count; ++i) {
    size_t length = net::kMinFrameSize + (length_seed * 37u + i * 1499u) % 3000;
    if ((flags & 64) && i == 0) length = net::kMaxFrameSize;
    std::vector<std::byte> frame(length, std::byte{static_cast<uint8_t>(i)});
    port.add_frame(std::move(frame));
  }
  (*device)->queue_notify(virtio::VirtioNet::kTransmitQueue);
  (*device)->queue_notify(virtio::VirtioNet::kReceiveQueue);
  if (flags & 2) (*device)->queue_notify(virtio::VirtioNet::kTransmitQueue);

  // Wait until nothing has moved for 10 polls (2 ms: the I/O thread may not have started yet;
  // at most ~100 ms), then stop the device.
  auto last = progress(**device, port, transport);
  int quiet = 0;
  for (int polls = 0; polls < 500 && quiet < 10; ++polls) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    auto now = progress(**device, port, transport);
    quiet = now == last ? quiet + 1 : 0;
    last = std::move(now);
  }
  (*device)->reset();
  return 0;
}
