// virtio-net end to end on a tap, in a private network namespace: the "guest" (a driver-side
// ring in guest RAM) sends an ARP request and a ping through the device, and the kernel's
// answers arrive in its receive buffers with a proper virtio_net_hdr.

#include <gtest/gtest.h>

#include "../net/host_network.h"
#include "../net/net_test_support.h"
#include "base/byte_order.h"
#include "net/tap_port.h"
#include "recording_transport.h"
#include "virtio/virtio_net.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace std::chrono_literals;
using net::MacAddress;
using namespace net::testing;

TEST(VirtioNetTap, GuestPingsTheHostThroughTheDevice) {
  std::string why = enter_network_namespace();
  if (!why.empty()) GTEST_SKIP() << "no network namespace for the tap test: " << why;
  auto tap = net::TapPort::open("lamvnet0");
  ASSERT_TRUE(tap) << tap.error().message();
  configure_interface("lamvnet0", kHostAddress, /*up=*/true);
  MacAddress host_mac = interface_mac("lamvnet0");

  auto memory = GuestMemory::create({{0, 16 << 20}});
  ASSERT_TRUE(memory);
  DmaMemory dma(*memory);
  testing::RecordingTransport transport(dma);
  testing::TestDriver receive(*memory, 128, 0x10000, 0x100000);
  testing::TestDriver transmit(*memory, 16, 0x20000, 0x800000);
  transport.queues_[0] = *Virtqueue::create(dma, receive.layout(), false, false);
  transport.queues_[1] = *Virtqueue::create(dma, transmit.layout(), false, false);
  auto device = VirtioNet::create(std::move(*tap), kGuestMac);
  ASSERT_TRUE(device);
  std::vector<uint64_t> buffers;
  for (int i = 0; i < 100; ++i) {
    buffers.push_back(receive.allocate(2048));
    receive.add_chain({{buffers.back(), 2048, true}});
  }
  ASSERT_TRUE((*device)->activate(transport, kFeatureVersion1 | kNetFeatureMergeableRxBuffers));
  (*device)->queue_notify(VirtioNet::kReceiveQueue);

  auto guest_send = [&](const std::vector<std::byte>& bytes) {
    uint64_t address = transmit.allocate(static_cast<uint32_t>(kNetHeaderSize + bytes.size()));
    ASSERT_TRUE(memory->write(address + kNetHeaderSize, bytes));
    transmit.add_chain({{address, static_cast<uint32_t>(kNetHeaderSize + bytes.size()), false}});
    (*device)->queue_notify(VirtioNet::kTransmitQueue);
  };
  uint16_t next_used = 0;
  // The next frame the guest receives (header checked, header stripped), within a second.
  auto guest_receive = [&]() -> std::optional<std::vector<std::byte>> {
    if (!testing::wait_until([&] { return receive.used_index() != next_used; }, 1s)) {
      return std::nullopt;
    }
    auto [id, length] = receive.used_element(next_used++);
    EXPECT_LT(id, buffers.size());
    EXPECT_GE(length, kNetHeaderSize + net::kMinFrameSize);
    auto bytes = receive.read_bytes(buffers[id % buffers.size()], length);
    EXPECT_EQ(load_le<uint16_t>(bytes.data() + 10), 1) << "num_buffers: one 2 KiB buffer";
    EXPECT_EQ(bytes[0], std::byte{0}) << "no flags: no offloads were negotiated";
    return std::vector<std::byte>(bytes.begin() + kNetHeaderSize, bytes.end());
  };

  guest_send(arp(1, kGuestMac, kGuestAddress, MacAddress(), kHostAddress,
                 MacAddress::broadcast()));
  bool answered = false;
  for (int frames = 0; frames < 20 && !answered; ++frames) {
    auto frame = guest_receive();
    if (!frame) break;
    if (frame->size() < 42 || get16(*frame, 12) != 0x0806) continue;  // IPv6 chatter
    EXPECT_EQ(get16(*frame, 20), 2);
    EXPECT_EQ(get_mac(*frame, 22), host_mac);
    EXPECT_EQ(get32(*frame, 28), kHostAddress);
    answered = true;
  }
  ASSERT_TRUE(answered) << "no ARP reply reached the guest";

  auto request = echo_request(host_mac, 3);
  guest_send(request);
  bool replied = false;
  for (int frames = 0; frames < 20 && !replied; ++frames) {
    auto frame = guest_receive();
    if (!frame) break;
    if (get16(*frame, 12) == 0x0806 && get16(*frame, 20) == 1) {
      guest_send(arp(2, kGuestMac, kGuestAddress, host_mac, kHostAddress, host_mac));
      continue;
    }
    if (get16(*frame, 12) != 0x0800 || frame->size() < request.size() ||
        static_cast<uint8_t>((*frame)[23]) != 1) {
      continue;
    }
    EXPECT_EQ(static_cast<uint8_t>((*frame)[34]), 0) << "an echo reply";
    EXPECT_EQ(get32(*frame, 30), kGuestAddress);
    EXPECT_EQ(get16(*frame, 40), 3);
    replied = true;
  }
  ASSERT_TRUE(replied) << "no echo reply reached the guest";
  EXPECT_GE(transport.signals_[0].load(), 1);
  EXPECT_GE((*device)->stats().transmitted_frames, 2U);
  EXPECT_EQ((*device)->stats().transmit_dropped, 0U);
  (*device)->reset();
}

}  // namespace
}  // namespace lamina::virtio
