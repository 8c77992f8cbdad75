// VirtioNet driven like a guest driver would (rings in real guest RAM through TestDriver), on a
// real Lamina virtual switch: the device's port and the test's "other VM" are SwitchPorts on an
// in-process SwitchDaemon.

#include "virtio/virtio_net.h"
#include "virtio/virtio_net_setup.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "../net/net_test_support.h"
#include "base/byte_order.h"
#include "base/state_stream.h"
#include "net/replaceable_port.h"
#include "net/switch_daemon.h"
#include "net/switch_port.h"
#include "recording_transport.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace std::chrono_literals;
using net::MacAddress;
using net::testing::frame;
using net::testing::mac;
using net::testing::receive_within;
using net::testing::send_frame;
using net::testing::tag_of;
using testing::RecordingTransport;
using testing::TestDriver;
using testing::wait_until;

constexpr uint64_t kRamSize = 8 << 20;
const MacAddress kGuestMac({0x52, 0x54, 0x00, 0x12, 0x34, 0x56});

class VirtioNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = net::SwitchDaemon::start("lab", {});
    ASSERT_TRUE(daemon && *daemon);
    daemon_ = std::move(*daemon);
    daemon_thread_ = std::jthread([this] { (void)daemon_->run(stop_.get()); });
    auto memory = GuestMemory::create({{0, kRamSize}});
    ASSERT_TRUE(memory);
    memory_.emplace(std::move(*memory));
    dma_.emplace(*memory_);
    transport_.emplace(*dma_);
    peer_ = plug("peer", mac(9));
    ASSERT_TRUE(peer_);
  }

  void TearDown() override {
    if (device_) device_->reset();
    device_.reset();
    stop_daemon();
  }

  void stop_daemon() {
    if (!daemon_thread_.joinable()) return;
    uint64_t one = 1;
    ASSERT_EQ(::write(stop_.get(), &one, 8), 8);
    daemon_thread_.join();
    daemon_.reset();
  }

  std::unique_ptr<net::SwitchPort> plug(const std::string& label, const MacAddress& address) {
    net::SwitchConnectOptions options;
    options.label = label;
    options.mac = address;
    options.auto_start = false;
    auto port = net::connect_switch("lab", options);
    EXPECT_TRUE(port) << port.error().message();
    return port ? std::move(*port) : nullptr;
  }

  // Makes the device, both queues and activates it with `features`.
  void activate(uint64_t features) {
    auto device = VirtioNet::create(plug("guest", kGuestMac), kGuestMac);
    ASSERT_TRUE(device) << device.error().message();
    device_ = std::move(*device);
    receive_.emplace(*memory_, 16, 0x10000, 0x100000);
    transmit_.emplace(*memory_, 16, 0x20000, 0x400000);
    transport_->queues_[0] = *Virtqueue::create(*dma_, receive_->layout(), false, false);
    transport_->queues_[1] = *Virtqueue::create(*dma_, transmit_->layout(), false, false);
    ASSERT_TRUE(device_->activate(*transport_, features | kFeatureVersion1));
  }

  // The guest transmits header + frame, the header in its own buffer as Linux does.
  void guest_transmit(const std::vector<std::byte>& bytes, uint8_t gso_type = kNetGsoNone) {
    std::vector<std::byte> header(kNetHeaderSize);
    header[1] = std::byte{gso_type};
    uint64_t header_address = transmit_->allocate(kNetHeaderSize);
    ASSERT_TRUE(memory_->write(header_address, header));
    uint64_t frame_address = transmit_->allocate(static_cast<uint32_t>(bytes.size()));
    ASSERT_TRUE(memory_->write(frame_address, bytes));
    transmit_->add_chain({{header_address, kNetHeaderSize, false},
                          {frame_address, static_cast<uint32_t>(bytes.size()), false}});
    device_->queue_notify(VirtioNet::kTransmitQueue);
  }

  // Saves the paused device's state and replaces it with a new card on a new port of the
  // switch, loaded from that state (as a checkpoint's restore or a migration's destination).
  void restore_into_new_device(const std::string& port) {
    device_->pause_io();
    StateWriter writer;
    device_->save(writer);
    const auto saved = writer.data();
    device_.reset();
    auto restored = VirtioNet::create(plug(port, kGuestMac), kGuestMac);
    ASSERT_TRUE(restored);
    StateReader reader(saved);
    ASSERT_TRUE((*restored)->load(reader));
    device_ = std::move(*restored);
  }

  // The guest posts one receive buffer; returns its address.
  uint64_t guest_post_receive(uint32_t length) {
    uint64_t address = receive_->allocate(length, std::byte{0xee});
    receive_->add_chain({{address, length, true}});
    return address;
  }

  net::testing::PrivateRuntimeDirectory runtime_;
  UniqueFd stop_{::eventfd(0, EFD_CLOEXEC)};
  std::unique_ptr<net::SwitchDaemon> daemon_;
  std::jthread daemon_thread_;
  std::optional<GuestMemory> memory_;
  std::optional<DmaMemory> dma_;
  std::optional<RecordingTransport> transport_;
  std::optional<TestDriver> receive_;
  std::optional<TestDriver> transmit_;
  std::unique_ptr<net::SwitchPort> peer_;
  std::unique_ptr<VirtioNet> device_;
};

TEST_F(VirtioNetTest, ConfigurationSpaceAndFeatures) {
  activate(0);
  EXPECT_EQ(device_->type(), DeviceType::kNet);
  EXPECT_EQ(device_->queue_count(), 2);
  uint64_t features = device_->device_features();
  EXPECT_NE(features & kNetFeatureMac, 0U);
  EXPECT_NE(features & kNetFeatureStatus, 0U);
  EXPECT_NE(features & kNetFeatureMergeableRxBuffers, 0U);
  std::array<std::byte, VirtioNet::kConfigSize> config{};
  device_->read_config(0, config);
  EXPECT_EQ(MacAddress::from_bytes(std::span<const std::byte, 6>(config.data(), 6)), kGuestMac);
  EXPECT_EQ(load_le<uint16_t>(config.data() + 6), kNetStatusLinkUp);
  EXPECT_EQ(load_le<uint16_t>(config.data() + 8), 1) << "one queue pair";
  std::array<std::byte, 2> status{};
  device_->read_config(6, status);
  EXPECT_EQ(load_le<uint16_t>(status.data()), kNetStatusLinkUp);
}

TEST_F(VirtioNetTest, TransmitStripsTheHeaderAndSendsTheFrame) {
  activate(0);
  auto sent = frame(MacAddress::broadcast(), kGuestMac, 41, 98);
  guest_transmit(sent);
  auto got = receive_within(*peer_);
  ASSERT_TRUE(got);
  EXPECT_EQ(*got, sent);
  ASSERT_TRUE(wait_until([&] { return transmit_->used_index() == 1; }));
  EXPECT_EQ(transmit_->used_element(0), (std::pair<uint32_t, uint32_t>{0, 0}));
  EXPECT_TRUE(wait_until([&] { return transport_->signals_[1] > 0; }));
  EXPECT_EQ(device_->stats().transmitted_frames, 1U);
}

TEST_F(VirtioNetTest, ReceivePutsHeaderAndFrameInOneBuffer) {
  activate(0);
  uint64_t buffer = guest_post_receive(1526);
  device_->queue_notify(VirtioNet::kReceiveQueue);
  auto sent = frame(kGuestMac, mac(9), 42, 200);
  send_frame(*peer_, sent);
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 1; }));
  EXPECT_EQ(receive_->used_element(0), (std::pair<uint32_t, uint32_t>{0, 212}));
  auto bytes = receive_->read_bytes(buffer, 212);
  std::vector<std::byte> header(bytes.begin(), bytes.begin() + kNetHeaderSize);
  std::vector<std::byte> expected_header(kNetHeaderSize);
  expected_header[10] = std::byte{1};  // num_buffers = 1
  EXPECT_EQ(header, expected_header);
  EXPECT_TRUE(std::equal(sent.begin(), sent.end(), bytes.begin() + kNetHeaderSize));
  EXPECT_TRUE(wait_until([&] { return transport_->signals_[0] > 0; }));
  EXPECT_EQ(device_->stats().received_frames, 1U);
}

TEST_F(VirtioNetTest, MergeableBuffersSpanOneFrameOverSeveral) {
  activate(kNetFeatureMergeableRxBuffers);
  std::vector<uint64_t> buffers;
  for (int i = 0; i < 6; ++i) buffers.push_back(guest_post_receive(256));
  device_->queue_notify(VirtioNet::kReceiveQueue);
  auto sent = frame(kGuestMac, mac(9), 43, 1000);
  send_frame(*peer_, sent);
  // 12 + 1000 bytes over 256-byte buffers: four of them, the last holding 244.
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 4; }));
  std::vector<std::byte> stream;
  for (uint16_t slot = 0; slot < 4; ++slot) {
    auto [id, length] = receive_->used_element(slot);
    EXPECT_EQ(id, slot);
    EXPECT_EQ(length, slot < 3 ? 256U : 244U);
    auto part = receive_->read_bytes(buffers[slot], length);
    stream.insert(stream.end(), part.begin(), part.end());
  }
  EXPECT_EQ(load_le<uint16_t>(stream.data() + 10), 4) << "num_buffers";
  EXPECT_TRUE(std::equal(sent.begin(), sent.end(), stream.begin() + kNetHeaderSize));
  EXPECT_EQ(receive_->read_bytes(buffers[4], 1)[0], std::byte{0xee}) << "the fifth untouched";
}

TEST_F(VirtioNetTest, FramesWaitForReceiveBuffersInOrder) {
  activate(0);
  for (uint32_t tag = 1; tag <= 3; ++tag) send_frame(*peer_, frame(kGuestMac, mac(9), tag));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(receive_->used_index(), 0);
  std::vector<uint64_t> buffers;
  for (int i = 0; i < 3; ++i) buffers.push_back(guest_post_receive(1526));
  device_->queue_notify(VirtioNet::kReceiveQueue);
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 3; }));
  for (uint16_t slot = 0; slot < 3; ++slot) {
    auto bytes = receive_->read_bytes(buffers[slot], kNetHeaderSize + 60);
    std::vector<std::byte> received(bytes.begin() + kNetHeaderSize, bytes.end());
    EXPECT_EQ(tag_of(received), slot + 1U) << "in order, none lost";
  }
  EXPECT_EQ(device_->stats().receive_dropped, 0U);
}

TEST_F(VirtioNetTest, FrameTooLargeForTheBufferIsDroppedAndTheBufferKept) {
  activate(0);
  uint64_t buffer = guest_post_receive(200);
  device_->queue_notify(VirtioNet::kReceiveQueue);
  send_frame(*peer_, frame(kGuestMac, mac(9), 1, 1514));
  send_frame(*peer_, frame(kGuestMac, mac(9), 2, 100));
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 1; }));
  EXPECT_EQ(receive_->used_element(0).second, 112U);
  auto bytes = receive_->read_bytes(buffer + kNetHeaderSize, 100);
  EXPECT_EQ(tag_of(bytes), 2U);
  EXPECT_EQ(device_->stats().receive_dropped, 1U);
}

TEST_F(VirtioNetTest, BadTransmitBuffersAreDroppedAndTheDeviceGoesOn) {
  activate(0);
  // Too short for a header and an Ethernet header.
  uint64_t tiny = transmit_->allocate(20);
  transmit_->add_chain({{tiny, 20, false}});
  device_->queue_notify(VirtioNet::kTransmitQueue);
  // Asks for TCPv4 segmentation (gso_type 1), never negotiated.
  guest_transmit(frame(MacAddress::broadcast(), kGuestMac, 2), 1);
  // A good one after them still goes out.
  guest_transmit(frame(MacAddress::broadcast(), kGuestMac, 3));
  auto got = receive_within(*peer_);
  ASSERT_TRUE(got);
  EXPECT_EQ(tag_of(*got), 3U);
  EXPECT_FALSE(receive_within(*peer_, 100ms));
  ASSERT_TRUE(wait_until([&] { return transmit_->used_index() == 3; }));
  EXPECT_EQ(device_->stats().transmit_dropped, 2U);
  EXPECT_EQ(device_->stats().transmitted_frames, 1U);
  std::lock_guard lock(transport_->mutex_);
  EXPECT_TRUE(transport_->errors_.empty());
}

TEST_F(VirtioNetTest, HostileRingIsADeviceError) {
  activate(0);
  // A descriptor that chains to itself.
  uint64_t data = transmit_->allocate(64);
  transmit_->set_descriptor(transmit_->layout().descriptor_table, 0, data, 64, 1 /*NEXT*/, 0);
  transmit_->publish(0);
  device_->queue_notify(VirtioNet::kTransmitQueue);
  ASSERT_TRUE(wait_until([&] {
    std::lock_guard lock(transport_->mutex_);
    return !transport_->errors_.empty();
  }));
  // reset() still returns promptly, and the device works after a new activation.
  device_->reset();
  transport_->queues_ = {};
  receive_.emplace(*memory_, 16, 0x30000, 0x600000);
  transmit_.emplace(*memory_, 16, 0x40000, 0x700000);
  transport_->queues_[0] = *Virtqueue::create(*dma_, receive_->layout(), false, false);
  transport_->queues_[1] = *Virtqueue::create(*dma_, transmit_->layout(), false, false);
  ASSERT_TRUE(device_->activate(*transport_, kFeatureVersion1));
  guest_transmit(frame(MacAddress::broadcast(), kGuestMac, 5));
  auto got = receive_within(*peer_);
  ASSERT_TRUE(got);
  EXPECT_EQ(tag_of(*got), 5U);
}

TEST_F(VirtioNetTest, BackendLossTakesTheLinkDown) {
  activate(0);
  guest_post_receive(1526);
  device_->queue_notify(VirtioNet::kReceiveQueue);
  stop_daemon();
  ASSERT_TRUE(wait_until([&] { return !device_->link_up(); }));
  EXPECT_GE(transport_->config_changes_.load(), 1);
  std::array<std::byte, 2> status{};
  device_->read_config(6, status);
  EXPECT_EQ(load_le<uint16_t>(status.data()), 0) << "LINK_UP cleared";
  // The guest can still transmit: its buffers come back, the frames are counted as dropped.
  guest_transmit(frame(MacAddress::broadcast(), kGuestMac, 6));
  ASSERT_TRUE(wait_until([&] { return transmit_->used_index() == 1; }));
  EXPECT_EQ(device_->stats().transmit_dropped, 1U);
}

// The backend dies, the listener hears it once; a new backend (a restarted switch) plugged in
// with replace_backend brings the link back, the card announces itself there, and frames flow.
TEST_F(VirtioNetTest, ANewBackendAfterALossBringsTheLinkBack) {
  auto replaceable = std::make_unique<net::ReplaceablePort>(plug("guest", kGuestMac));
  net::ReplaceablePort& port = *replaceable;
  auto device = VirtioNet::create(std::move(replaceable), kGuestMac);
  ASSERT_TRUE(device);
  device_ = std::move(*device);
  std::atomic<int> failures = 0;
  device_->set_backend_failure_listener([&](const Error&) { ++failures; });
  receive_.emplace(*memory_, 16, 0x10000, 0x100000);
  transmit_.emplace(*memory_, 16, 0x20000, 0x400000);
  transport_->queues_[0] = *Virtqueue::create(*dma_, receive_->layout(), false, false);
  transport_->queues_[1] = *Virtqueue::create(*dma_, transmit_->layout(), false, false);
  ASSERT_TRUE(device_->activate(*transport_, kFeatureVersion1));
  guest_post_receive(1526);
  device_->queue_notify(VirtioNet::kReceiveQueue);
  peer_.reset();
  stop_daemon();
  ASSERT_TRUE(wait_until([&] { return !device_->link_up(); }));
  ASSERT_TRUE(wait_until([&] { return failures.load() == 1; }));
  const int changes_when_down = transport_->config_changes_.load();

  // The switch comes back; the card moves to a new port on it.
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));  // the old daemon's stop was signalled
  auto daemon = net::SwitchDaemon::start("lab", {});
  ASSERT_TRUE(daemon && *daemon);
  daemon_ = std::move(*daemon);
  daemon_thread_ = std::jthread([this] { (void)daemon_->run(stop_.get()); });
  peer_ = plug("peer", mac(9));
  ASSERT_TRUE(peer_);
  device_->replace_backend([&] { port.replace(plug("guest again", kGuestMac)); });
  EXPECT_TRUE(device_->link_up());
  EXPECT_GT(transport_->config_changes_.load(), changes_when_down) << "the guest was told";
  auto announcement = receive_within(*peer_);
  ASSERT_TRUE(announcement) << "no RARP from the reconnected card";
  EXPECT_EQ(load_be<uint16_t>(announcement->data() + 12), 0x8035);
  // Both ways again (the card's further announcements are not the guest's frame).
  guest_transmit(frame(mac(9), kGuestMac, 7));
  auto sent = receive_within(*peer_);
  while (sent && load_be<uint16_t>(sent->data() + 12) == 0x8035) sent = receive_within(*peer_);
  ASSERT_TRUE(sent);
  EXPECT_EQ(tag_of(*sent), 7U);
  send_frame(*peer_, frame(kGuestMac, mac(9), 8));
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 1; }));
  EXPECT_EQ(failures.load(), 1);
}

TEST_F(VirtioNetTest, SaveAndLoadKeepTheAddressAndRefuseAGroupOne) {
  activate(0);
  StateWriter writer;
  device_->save(writer);
  auto saved = writer.data();
  auto other = VirtioNet::create(plug("other", mac(7)), mac(7));
  ASSERT_TRUE(other);
  StateReader reader(saved);
  ASSERT_TRUE((*other)->load(reader));
  EXPECT_EQ((*other)->mac(), kGuestMac);
  EXPECT_TRUE((*other)->link_up());

  // A stream whose MAC is a group address is refused.
  StateWriter bad;
  bad.begin_section("virtio-net", 1);
  std::array<std::byte, 6> group{std::byte{0x01}};
  bad.put_bytes(group);
  bad.put_bool(true);
  bad.end_section();
  auto bad_bytes = bad.data();
  StateReader bad_reader(bad_bytes);
  auto refused = (*other)->load(bad_reader);
  ASSERT_FALSE(refused);
  EXPECT_EQ((*other)->mac(), kGuestMac);
}

// A checkpoint while a frame is in flight: the device holds a received frame that needs four
// buffers with only two posted. pause_io() stops the I/O thread and gives the two chains back
// to the ring; a new device loaded from the saved state, on the same rings, delivers the frame
// whole once the guest posts two more buffers: nothing lost, nothing duplicated.
TEST_F(VirtioNetTest, PauseAndSaveKeepAFrameInFlightAndGiveTheChainsBack) {
  activate(kNetFeatureMergeableRxBuffers);
  std::vector<uint64_t> buffers;
  for (int i = 0; i < 2; ++i) buffers.push_back(guest_post_receive(256));
  device_->queue_notify(VirtioNet::kReceiveQueue);
  auto sent = frame(kGuestMac, mac(9), 44, 1000);
  send_frame(*peer_, sent);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(receive_->used_index(), 0) << "two buffers cannot hold it";
  ASSERT_NO_FATAL_FAILURE(restore_into_new_device("restored"));
  ASSERT_TRUE(device_->activate(*transport_, kNetFeatureMergeableRxBuffers | kFeatureVersion1));
  for (int i = 0; i < 2; ++i) buffers.push_back(guest_post_receive(256));
  device_->queue_notify(VirtioNet::kReceiveQueue);
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 4; }));
  std::vector<std::byte> stream;
  for (uint16_t slot = 0; slot < 4; ++slot) {
    auto [id, length] = receive_->used_element(slot);
    EXPECT_EQ(id, slot) << "the given-back chains come first, in order";
    auto part = receive_->read_bytes(buffers[slot], length);
    stream.insert(stream.end(), part.begin(), part.end());
  }
  EXPECT_EQ(load_le<uint16_t>(stream.data() + 10), 4) << "num_buffers";
  ASSERT_EQ(stream.size(), kNetHeaderSize + sent.size());
  EXPECT_TRUE(std::equal(sent.begin(), sent.end(), stream.begin() + kNetHeaderSize));
  EXPECT_EQ(device_->stats().receive_dropped, 0U);
}

// A card restored from a state (checkpoint, live migration) announces its MAC with a broadcast
// RARP at once, so learning switches find its new port, and four more times at growing gaps
// (one lost frame must not leave a switch pointing at the old port); a booted card does not.
TEST_F(VirtioNetTest, ARestoredCardAnnouncesItselfWithFiveRarps) {
  activate(0);
  EXPECT_FALSE(receive_within(*peer_, 200ms)) << "a booted card announced itself";
  ASSERT_NO_FATAL_FAILURE(restore_into_new_device("moved"));
  const auto activated = std::chrono::steady_clock::now();
  ASSERT_TRUE(device_->activate(*transport_, kFeatureVersion1));
  auto got = receive_within(*peer_);
  ASSERT_TRUE(got);
  const std::vector<std::byte>& rarp = *got;
  ASSERT_GE(rarp.size(), 42U);
  const auto guest_mac = std::as_bytes(std::span(kGuestMac.bytes()));
  EXPECT_TRUE(std::all_of(rarp.begin(), rarp.begin() + 6, [](std::byte b) { return b == std::byte{0xff}; }));
  EXPECT_TRUE(std::equal(guest_mac.begin(), guest_mac.end(), rarp.begin() + 6));
  EXPECT_EQ(load_be<uint16_t>(rarp.data() + 12), 0x8035);
  EXPECT_EQ(load_be<uint16_t>(rarp.data() + 20), 3) << "request reverse";
  EXPECT_TRUE(std::equal(guest_mac.begin(), guest_mac.end(), rarp.begin() + 22));
  EXPECT_TRUE(std::equal(guest_mac.begin(), guest_mac.end(), rarp.begin() + 32));
  // Each later one comes no sooner than the gaps before it add up to (50, 200, 450, 800 ms
  // after the start; a loaded host only makes them later, so this bound holds under load).
  int64_t due_ms = 0;
  for (int round = 1; round < VirtioNet::kAnnounceRounds; ++round) {
    auto again = receive_within(*peer_, 3s);
    ASSERT_TRUE(again) << "announcement " << round + 1 << " did not come";
    EXPECT_EQ(*again, rarp) << "the same RARP each time";
    due_ms += VirtioNet::kAnnounceGapsMs[round - 1];
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - activated);
    EXPECT_GE(elapsed.count(), due_ms) << "announcement " << round + 1 << " came early";
  }
  EXPECT_FALSE(receive_within(*peer_, 600ms)) << "five announcements only";
  EXPECT_EQ(device_->stats().transmitted_frames, 0U) << "not the guest's traffic";
}

// A state saved by an older Lamina (section v1: no frames in flight) still loads.
TEST_F(VirtioNetTest, AVersionOneSectionStillLoads) {
  StateWriter older;
  older.begin_section("virtio-net", 1);
  older.put_bytes(std::as_bytes(std::span(kGuestMac.bytes())));
  older.put_bool(true);
  older.end_section();
  const auto bytes = older.data();
  auto device = VirtioNet::create(plug("older", mac(7)), mac(7));
  ASSERT_TRUE(device);
  StateReader reader(bytes);
  ASSERT_TRUE((*device)->load(reader));
  EXPECT_EQ((*device)->mac(), kGuestMac);
  EXPECT_TRUE(reader.at_end());
}

TEST_F(VirtioNetTest, ResumeAfterPauseServesWhatArrivedMeanwhile) {
  activate(0);
  device_->pause_io();
  send_frame(*peer_, frame(kGuestMac, mac(9), 45));
  uint64_t buffer = guest_post_receive(1526);
  device_->queue_notify(VirtioNet::kReceiveQueue);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(receive_->used_index(), 0) << "paused: nothing touches the ring";
  device_->resume_io();
  ASSERT_TRUE(wait_until([&] { return receive_->used_index() == 1; }));
  auto bytes = receive_->read_bytes(buffer, kNetHeaderSize + 60);
  EXPECT_EQ(tag_of(std::vector<std::byte>(bytes.begin() + kNetHeaderSize, bytes.end())), 45U);
}

TEST_F(VirtioNetTest, SetupOpensTheNamedSwitchWithTheGivenAddress) {
  auto option = net::parse_network_option("switch:lab,mac=52:54:00:aa:bb:cc");
  ASSERT_TRUE(option);
  net::SwitchConnectOptions connect;
  connect.label = "vm one";
  connect.auto_start = false;
  auto device = open_virtio_net(*option, connect);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ((*device)->mac().to_string(), "52:54:00:aa:bb:cc");
  EXPECT_EQ((*device)->port().description(), "switch:lab");

  auto missing = net::parse_network_option("switch:elsewhere");
  ASSERT_TRUE(missing);
  auto refused = open_virtio_net(*missing, connect);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("--net switch:elsewhere: switch elsewhere: no switch "
                                           "daemon is running"),
            std::string::npos)
      << refused.error().message();
}

TEST_F(VirtioNetTest, RandomRingsNeverCrashOrHangTheDevice) {
  activate(0);
  std::mt19937 random(20261124);
  for (int round = 0; round < 40; ++round) {
    device_->reset();
    receive_.emplace(*memory_, 16, 0x10000, 0x100000);
    transmit_.emplace(*memory_, 16, 0x20000, 0x400000);
    // Random descriptors (addresses mostly inside RAM, lengths of any size) and avail rings.
    for (auto* driver : {&*receive_, &*transmit_}) {
      for (uint16_t index = 0; index < 16; ++index) {
        uint64_t address = random() % 2 == 0 ? random() % kRamSize : random();
        driver->set_descriptor(driver->layout().descriptor_table, index, address,
                               random() % 3 == 0 ? random() : random() % 4096,
                               static_cast<uint16_t>(random() % 8),
                               static_cast<uint16_t>(random()));
      }
      for (int published = random() % 20; published > 0; --published) {
        driver->publish(static_cast<uint16_t>(random() % 20));
      }
    }
    transport_->queues_[0] = *Virtqueue::create(*dma_, receive_->layout(), false, false);
    transport_->queues_[1] = *Virtqueue::create(*dma_, transmit_->layout(), false, false);
    uint64_t features = kFeatureVersion1 | (random() % 2 ? kNetFeatureMergeableRxBuffers : 0);
    ASSERT_TRUE(device_->activate(*transport_, features));
    send_frame(*peer_, frame(kGuestMac, mac(9), round, 14 + random() % 3000));
    device_->queue_notify(VirtioNet::kTransmitQueue);
    device_->queue_notify(VirtioNet::kReceiveQueue);
    std::this_thread::sleep_for(2ms);
  }
  device_->reset();
  // Whatever the rings held, the device is still a working NIC afterwards.
  receive_.emplace(*memory_, 16, 0x10000, 0x100000);
  transmit_.emplace(*memory_, 16, 0x20000, 0x400000);
  transport_->queues_[0] = *Virtqueue::create(*dma_, receive_->layout(), false, false);
  transport_->queues_[1] = *Virtqueue::create(*dma_, transmit_->layout(), false, false);
  ASSERT_TRUE(device_->activate(*transport_, kFeatureVersion1));
  while (receive_within(*peer_, 20ms)) {
  }
  guest_transmit(frame(MacAddress::broadcast(), kGuestMac, 77));
  auto got = receive_within(*peer_);
  ASSERT_TRUE(got);
  EXPECT_EQ(tag_of(*got), 77U);
}

TEST(VirtioNetSetup, ValidateRefusesDuplicateAddressesAndTaps) {
  auto a = *net::parse_network_option("switch:lab,mac=52:54:00:00:00:01");
  auto b = *net::parse_network_option("switch:other,mac=52:54:00:00:00:01");
  auto c = *net::parse_network_option("tap:tap0");
  auto d = *net::parse_network_option("tap:tap0");
  std::vector<net::NetworkOption> good{a, c};
  EXPECT_TRUE(validate_networks(good));
  std::vector<net::NetworkOption> same_mac{a, b};
  auto refused = validate_networks(same_mac);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("same MAC address 52:54:00:00:00:01"),
            std::string::npos);
  std::vector<net::NetworkOption> same_tap{c, d};
  refused = validate_networks(same_tap);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("tap:tap0 is given twice"), std::string::npos);
}

}  // namespace
}  // namespace lamina::virtio
