// virtio-net back-pressure against a switch daemon process that stops reading (SIGSTOP): the
// device keeps the frame the backend refused, stops taking the guest's buffers, and when the
// daemon runs again sends everything: no frame is lost on the guest side.

#include <gtest/gtest.h>
#include <signal.h>

#include "../net/net_test_support.h"
#include "net/switch_port.h"
#include "net/switch_query.h"
#include "recording_transport.h"
#include "virtio/virtio_net.h"
#include "virtqueue_driver.h"

#ifndef LAMINA_BINARY
#error "LAMINA_BINARY must name the lamina executable"
#endif

namespace lamina::virtio {
namespace {

using namespace std::chrono_literals;
using net::MacAddress;

TEST(VirtioNetBackpressure, StoppedSwitchHoldsTheGuestBackAndLosesNothing) {
  net::testing::PrivateRuntimeDirectory runtime;
  const MacAddress guest_mac({0x52, 0x54, 0x00, 0, 0, 1});
  net::SwitchConnectOptions options;
  options.mac = guest_mac;
  options.daemon.program = LAMINA_BINARY;
  options.daemon.arguments = {"--idle-exit", "1"};
  options.label = "guest";
  auto guest_port = net::connect_switch("bp", options);
  ASSERT_TRUE(guest_port) << guest_port.error().message();
  uint32_t guest_port_id = (*guest_port)->port_id();
  options.label = "peer";
  options.mac = MacAddress({0x52, 0x54, 0x00, 0, 0, 2});
  auto peer = net::connect_switch("bp", options);
  ASSERT_TRUE(peer) << peer.error().message();
  auto status = net::query_switch("bp");
  ASSERT_TRUE(status);
  pid_t daemon = status->pid;

  auto memory = GuestMemory::create({{0, 16 << 20}});
  ASSERT_TRUE(memory);
  DmaMemory dma(*memory);
  testing::RecordingTransport transport(dma);
  testing::TestDriver receive(*memory, 16, 0x10000, 0x100000);
  testing::TestDriver transmit(*memory, 256, 0x20000, 0x200000);
  transport.queues_[0] = *Virtqueue::create(dma, receive.layout(), false, false);
  transport.queues_[1] = *Virtqueue::create(dma, transmit.layout(), false, false);
  auto device = VirtioNet::create(std::move(*guest_port), guest_mac);
  ASSERT_TRUE(device);
  ASSERT_TRUE((*device)->activate(transport, kFeatureVersion1));

  ASSERT_EQ(::kill(daemon, SIGSTOP), 0);
  // However the test ends, the daemon must not stay stopped.
  struct Continue {
    pid_t pid;
    ~Continue() { ::kill(pid, SIGCONT); }
  } continue_daemon{daemon};
  constexpr uint32_t kFrames = 120;  // 240 descriptors of 256; ~280 KB, more than a socket holds
  std::vector<std::byte> header(kNetHeaderSize);
  for (uint32_t i = 0; i < kFrames; ++i) {
    auto bytes = net::testing::frame(MacAddress::broadcast(), guest_mac, i, 1514);
    uint64_t header_address = transmit.allocate(kNetHeaderSize);
    uint64_t frame_address = transmit.allocate(1514);
    ASSERT_TRUE(memory->write(header_address, header));
    ASSERT_TRUE(memory->write(frame_address, bytes));
    transmit.add_chain({{header_address, kNetHeaderSize, false}, {frame_address, 1514, false}});
  }
  (*device)->queue_notify(VirtioNet::kTransmitQueue);
  // The device sends until the socket is full, then holds one frame and waits.
  std::this_thread::sleep_for(300ms);
  uint16_t held_at = transmit.used_index();
  EXPECT_GT(held_at, 0);
  EXPECT_LT(held_at, kFrames) << "the device must stop taking buffers while the switch is stuck";
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(transmit.used_index(), held_at) << "and not spin through them dropping frames";
  EXPECT_EQ((*device)->stats().transmit_dropped, 0U);

  ASSERT_EQ(::kill(daemon, SIGCONT), 0);
  // Drain the peer while the device catches up.
  uint32_t received = 0;
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (transmit.used_index() != kFrames && std::chrono::steady_clock::now() < deadline) {
    while (net::testing::receive_within(**peer, 1ms)) ++received;
  }
  while (net::testing::receive_within(**peer, 50ms)) ++received;
  ASSERT_EQ(transmit.used_index(), kFrames);
  EXPECT_EQ((*device)->stats().transmitted_frames, kFrames);
  EXPECT_EQ((*device)->stats().transmit_dropped, 0U);
  // Every frame reached the switch; the switch delivered each to the peer or counted it.
  auto after = net::query_switch("bp");
  ASSERT_TRUE(after) << after.error().message();
  for (const auto& port : after->ports) {
    if (port.id == guest_port_id) {
      EXPECT_EQ(port.received_frames, kFrames);
    } else {
      EXPECT_EQ(port.label, "peer");
      EXPECT_EQ(port.sent_frames + port.dropped_frames, kFrames);
      EXPECT_EQ(port.sent_frames, received);
    }
  }
  (*device)->reset();
}

}  // namespace
}  // namespace lamina::virtio
