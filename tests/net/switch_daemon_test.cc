// The virtual switch's forwarding, driven through real Unix sockets: a SwitchDaemon runs on a
// thread of the test, ports are real SwitchPorts (connect_switch without auto-start).

#include <gtest/gtest.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <thread>

#include "net/switch_daemon.h"
#include "net/switch_port.h"
#include "net/switch_query.h"
#include "net_test_support.h"

namespace lamina::net {
namespace {

using namespace std::chrono_literals;
using testing::frame;
using testing::mac;
using testing::receive_within;
using testing::send_frame;
using testing::tag_of;

// How long a test waits to be sure a frame does NOT arrive.
constexpr auto kQuiet = 150ms;

class SwitchDaemonTest : public ::testing::Test {
 protected:
  void start(SwitchDaemonOptions options = {}) {
    auto daemon = SwitchDaemon::start("lab", options);
    ASSERT_TRUE(daemon) << daemon.error().message();
    ASSERT_TRUE(*daemon);
    daemon_ = std::move(*daemon);
    thread_ = std::jthread([this] {
      auto served = daemon_->run(stop_.get());
      EXPECT_TRUE(served) << served.error().message();
    });
  }

  void stop() {
    if (!thread_.joinable()) return;
    uint64_t one = 1;
    ASSERT_EQ(::write(stop_.get(), &one, sizeof(one)), 8);
    thread_.join();
    daemon_.reset();
  }

  void TearDown() override { stop(); }

  // A port for a card with address `address`; with `spoofing` it may send from others too.
  std::unique_ptr<SwitchPort> plug(const std::string& label, const MacAddress& address,
                                   bool spoofing = false) {
    SwitchConnectOptions options;
    options.label = label;
    options.mac = address;
    options.mac_spoofing = spoofing;
    options.auto_start = false;
    auto port = connect_switch("lab", options);
    EXPECT_TRUE(port) << port.error().message();
    return port ? std::move(*port) : nullptr;
  }

  SwitchStatus status() {
    auto status = query_switch("lab");
    EXPECT_TRUE(status) << status.error().message();
    return status ? *status : SwitchStatus{};
  }

  const SwitchPortStatus* port_status(const SwitchStatus& status, uint32_t id) {
    for (const auto& port : status.ports) {
      if (port.id == id) return &port;
    }
    return nullptr;
  }

  testing::PrivateRuntimeDirectory runtime_;
  UniqueFd stop_{::eventfd(0, EFD_CLOEXEC)};
  std::unique_ptr<SwitchDaemon> daemon_;
  std::jthread thread_;
};

TEST_F(SwitchDaemonTest, FloodsUnknownAndBroadcastButNeverEchoes) {
  start();
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  auto c = plug("c", mac(3));
  ASSERT_TRUE(a && b && c);
  EXPECT_NE(a->port_id(), b->port_id());

  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 100));
  for (auto* port : {b.get(), c.get()}) {
    auto got = receive_within(*port);
    ASSERT_TRUE(got);
    EXPECT_EQ(tag_of(*got), 100U);
    EXPECT_EQ(*got, frame(MacAddress::broadcast(), mac(1), 100)) << "forwarded unchanged";
  }
  EXPECT_FALSE(receive_within(*a, kQuiet)) << "a broadcast must not come back to its sender";

  // Unknown unicast floods too.
  send_frame(*b, frame(mac(99), mac(2), 101));
  EXPECT_EQ(tag_of(receive_within(*a).value()), 101U);
  EXPECT_EQ(tag_of(receive_within(*c).value()), 101U);
  EXPECT_FALSE(receive_within(*b, kQuiet));

  // Multicast (group bit) floods even when the address happens to be "known".
  send_frame(*c, frame(*MacAddress::parse("01:00:5e:00:00:fb"), mac(3), 102));
  EXPECT_EQ(tag_of(receive_within(*a).value()), 102U);
  EXPECT_EQ(tag_of(receive_within(*b).value()), 102U);
}

TEST_F(SwitchDaemonTest, LearnedUnicastGoesOnlyToItsPort) {
  start();
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  auto c = plug("c", mac(3), /*spoofing=*/true);
  ASSERT_TRUE(a && b && c);
  // b announces mac(2) (a broadcast reaches a and c).
  send_frame(*b, frame(MacAddress::broadcast(), mac(2), 1));
  ASSERT_TRUE(receive_within(*a));
  ASSERT_TRUE(receive_within(*c));

  send_frame(*a, frame(mac(2), mac(1), 2));
  auto got = receive_within(*b);
  ASSERT_TRUE(got);
  EXPECT_EQ(tag_of(*got), 2U);
  EXPECT_FALSE(receive_within(*c, kQuiet)) << "known unicast must not flood";
  EXPECT_FALSE(receive_within(*a, kQuiet));

  // a was learned from that frame: b's answer goes to a alone.
  send_frame(*b, frame(mac(1), mac(2), 3));
  EXPECT_EQ(tag_of(receive_within(*a).value()), 3U);
  EXPECT_FALSE(receive_within(*c, kQuiet));

  // The station behind mac(2) moves to c: the switch follows it.
  send_frame(*c, frame(mac(1), mac(2), 4));
  EXPECT_EQ(tag_of(receive_within(*a).value()), 4U);
  send_frame(*a, frame(mac(2), mac(1), 5));
  EXPECT_EQ(tag_of(receive_within(*c).value()), 5U);
  EXPECT_FALSE(receive_within(*b, kQuiet));

  SwitchStatus seen = status();
  ASSERT_EQ(seen.macs.size(), 2U);
  EXPECT_EQ(seen.macs[0].address, mac(1).to_string());
  EXPECT_EQ(seen.macs[0].port, a->port_id());
  EXPECT_EQ(seen.macs[1].address, mac(2).to_string());
  EXPECT_EQ(seen.macs[1].port, c->port_id());
  const auto* a_status = port_status(seen, a->port_id());
  ASSERT_NE(a_status, nullptr);
  EXPECT_EQ(a_status->label, "a");
  EXPECT_EQ(a_status->pid, ::getpid());
  EXPECT_EQ(a_status->received_frames, 2U);
  EXPECT_EQ(a_status->sent_frames, 3U);  // the broadcast, then 3 and 4
  EXPECT_EQ(a_status->received_bytes, 120U);
}

TEST_F(SwitchDaemonTest, FrameToTheSendersOwnPortIsFilteredAndCounted) {
  start();
  auto a = plug("a", mac(1), /*spoofing=*/true);
  auto b = plug("b", mac(2));
  ASSERT_TRUE(a && b);
  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 1));
  ASSERT_TRUE(receive_within(*b));
  // Two stations behind port a (a bridged guest): a frame between them stays on a's side.
  send_frame(*a, frame(mac(1), mac(11), 2));
  EXPECT_FALSE(receive_within(*b, kQuiet));
  EXPECT_FALSE(receive_within(*a, kQuiet));
  EXPECT_EQ(status().filtered_frames, 1U);
}

TEST_F(SwitchDaemonTest, LearnedAddressesAgeOut) {
  SwitchDaemonOptions options;
  options.mac_age = 300ms;
  start(options);
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  auto c = plug("c", mac(3));
  ASSERT_TRUE(a && b && c);
  send_frame(*b, frame(MacAddress::broadcast(), mac(2), 1));
  ASSERT_TRUE(receive_within(*a));
  ASSERT_TRUE(receive_within(*c));
  send_frame(*a, frame(mac(2), mac(1), 2));
  ASSERT_TRUE(receive_within(*b));
  EXPECT_FALSE(receive_within(*c, 50ms));

  std::this_thread::sleep_for(400ms);
  // mac(2) has not been seen for longer than the age: unknown again, so the frame floods.
  send_frame(*a, frame(mac(2), mac(1), 3));
  EXPECT_EQ(tag_of(receive_within(*b).value()), 3U);
  EXPECT_EQ(tag_of(receive_within(*c).value()), 3U);
  SwitchStatus seen = status();
  ASSERT_EQ(seen.macs.size(), 1U) << "only mac(1), just refreshed";
  EXPECT_EQ(seen.macs[0].address, mac(1).to_string());
  EXPECT_DOUBLE_EQ(seen.mac_age_seconds, 0.3);
}

TEST_F(SwitchDaemonTest, DisconnectForgetsThePortsAddresses) {
  start();
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  auto c = plug("c", mac(3));
  ASSERT_TRUE(a && b && c);
  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 1));
  ASSERT_TRUE(receive_within(*b));
  ASSERT_TRUE(receive_within(*c));
  uint32_t a_id = a->port_id();
  a.reset();
  // The daemon notices the close; wait until the status says so.
  for (int i = 0; i < 100 && status().ports.size() != 2; ++i) std::this_thread::sleep_for(10ms);
  SwitchStatus seen = status();
  ASSERT_EQ(seen.ports.size(), 2U);
  EXPECT_EQ(port_status(seen, a_id), nullptr);
  EXPECT_TRUE(seen.macs.empty());
  // mac(1) is unknown again: the frame floods to c instead of vanishing into a dead port.
  send_frame(*b, frame(mac(1), mac(2), 2));
  EXPECT_EQ(tag_of(receive_within(*c).value()), 2U);
  EXPECT_EQ(status().filtered_frames, 0U);
}

TEST_F(SwitchDaemonTest, MalformedFramesAreDroppedAndCounted) {
  start();
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  ASSERT_TRUE(a && b);
  // Raw datagrams on a's socket, bypassing SwitchPort::send's own size check.
  std::vector<std::byte> runt(13);
  ASSERT_EQ(::send(a->poll_fd(), runt.data(), runt.size(), 0), 13);
  std::vector<std::byte> huge(kMaxFrameSize + 1);
  std::memcpy(huge.data(), frame(MacAddress::broadcast(), mac(1), 0).data(), 14);
  ASSERT_EQ(::send(a->poll_fd(), huge.data(), huge.size(), 0), static_cast<ssize_t>(huge.size()));
  auto group_source = frame(MacAddress::broadcast(), MacAddress::broadcast(), 7);
  ASSERT_EQ(::send(a->poll_fd(), group_source.data(), group_source.size(), 0), 60);
  // A frame of exactly the limits passes: a bare 14-byte header and a 65549-byte frame.
  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 0, kMinFrameSize));
  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 8, kMaxFrameSize));
  auto bare = receive_within(*b);
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->size(), kMinFrameSize);
  auto largest = receive_within(*b);
  ASSERT_TRUE(largest);
  EXPECT_EQ(largest->size(), kMaxFrameSize);
  EXPECT_EQ(tag_of(*largest), 8U);
  EXPECT_FALSE(receive_within(*b, kQuiet));

  SwitchStatus seen = status();
  const auto* a_status = port_status(seen, a->port_id());
  ASSERT_NE(a_status, nullptr);
  EXPECT_EQ(a_status->malformed_frames, 3U);
  EXPECT_EQ(a_status->received_frames, 2U);
  ASSERT_EQ(seen.macs.size(), 1U) << "a group source address is never learned";
  // And SwitchPort refuses bad sizes before they reach the socket.
  auto refused = a->send(runt);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(SwitchDaemonTest, PortThatDoesNotReadLosesFramesCountedNeverSilently) {
  start();
  auto sender = plug("sender", mac(1));
  auto sleeper = plug("sleeper", mac(2));
  ASSERT_TRUE(sender && sleeper);
  constexpr int kFrames = 600;
  for (int i = 0; i < kFrames; ++i) {
    send_frame(*sender, frame(MacAddress::broadcast(), mac(1), i, 1514));
  }
  // All were switched once the sender's frames are all counted as received.
  SwitchStatus seen;
  for (int i = 0; i < 200; ++i) {
    seen = status();
    const auto* port = port_status(seen, sender->port_id());
    if (port != nullptr && port->received_frames == kFrames) break;
    std::this_thread::sleep_for(10ms);
  }
  const auto* sleeper_status = port_status(seen, sleeper->port_id());
  ASSERT_NE(sleeper_status, nullptr);
  EXPECT_GT(sleeper_status->dropped_frames, 0U) << "600 full frames exceed a socket buffer";
  EXPECT_EQ(sleeper_status->sent_frames + sleeper_status->dropped_frames, uint64_t{kFrames});
  // Exactly the delivered ones are waiting, in order.
  uint64_t waiting = 0;
  int previous = -1;
  while (auto got = receive_within(*sleeper, 50ms)) {
    EXPECT_GT(static_cast<int>(tag_of(*got)), previous);
    previous = static_cast<int>(tag_of(*got));
    ++waiting;
  }
  EXPECT_EQ(waiting, sleeper_status->sent_frames);
  EXPECT_EQ(sleeper->stats().received_frames, waiting);
  EXPECT_EQ(sender->stats().sent_frames, uint64_t{kFrames});
}

TEST_F(SwitchDaemonTest, RefusesPortsBeyondTheMaximum) {
  SwitchDaemonOptions options;
  options.max_ports = 2;
  start(options);
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  ASSERT_TRUE(a && b);
  SwitchConnectOptions connect;
  connect.mac = mac(3);
  connect.auto_start = false;
  auto third = connect_switch("lab", connect);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(third.error().message().find("maximum of 2 ports"), std::string::npos)
      << third.error().message();
}

TEST_F(SwitchDaemonTest, SecondDaemonForTheSameNameIsTurnedAway) {
  start();
  auto second = SwitchDaemon::start("lab", {});
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(*second, nullptr);
  // The first one still serves.
  EXPECT_TRUE(plug("a", mac(1)));
}

TEST_F(SwitchDaemonTest, PortSeesTheDaemonGoAway) {
  start();
  auto a = plug("a", mac(1));
  ASSERT_TRUE(a);
  stop();
  std::vector<std::byte> buffer(kMaxFrameSize);
  auto received = a->receive(buffer);
  ASSERT_FALSE(received);
  EXPECT_EQ(received.error().code(), ErrorCode::kIo);
  EXPECT_NE(received.error().message().find("switch:lab: the switch daemon went away"),
            std::string::npos)
      << received.error().message();
  auto sent = a->send(frame(MacAddress::broadcast(), mac(1), 1));
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code(), ErrorCode::kIo);
  // And the socket path is gone with the daemon.
  EXPECT_FALSE(std::filesystem::exists(runtime_.path() / "lamina/switch/lab.sock"));
}

TEST_F(SwitchDaemonTest, SilentConnectionsAreClosedAfterTheHelloTimeout) {
  SwitchDaemonOptions options;
  options.hello_timeout = 100ms;
  start(options);
  UniqueFd silent(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  auto path = (runtime_.path() / "lamina/switch/lab.sock").string();
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(silent.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  pollfd polled{silent.get(), POLLIN, 0};
  auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(::poll(&polled, 1, 2000), 1);
  char byte;
  EXPECT_EQ(::recv(silent.get(), &byte, 1, 0), 0) << "closed by the daemon";
  EXPECT_GE(std::chrono::steady_clock::now() - started, 90ms);
  EXPECT_TRUE(status().ports.empty());
}

TEST_F(SwitchDaemonTest, WithoutDaemonAndAutoStartTheErrorSaysHowToStartOne) {
  SwitchConnectOptions options;
  options.mac = mac(1);
  options.auto_start = false;
  auto port = connect_switch("nobody", options);
  ASSERT_FALSE(port);
  EXPECT_EQ(port.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(port.error().message().find("lamina switch serve nobody"), std::string::npos);
  auto status = query_switch("nobody");
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error().code(), ErrorCode::kNotFound);
  auto listed = list_switches();
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

TEST_F(SwitchDaemonTest, GarbageHelloIsRefusedAndTheSwitchGoesOn) {
  start();
  UniqueFd rogue(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  auto path = (runtime_.path() / "lamina/switch/lab.sock").string();
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(rogue.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const char garbage[] = "\x01\x02 not json";
  ASSERT_GT(::send(rogue.get(), garbage, sizeof(garbage), 0), 0);
  char reply[512];
  ssize_t length = ::recv(rogue.get(), reply, sizeof(reply), 0);
  ASSERT_GT(length, 0);
  EXPECT_NE(std::string(reply, length).find("error"), std::string::npos);
  EXPECT_EQ(::recv(rogue.get(), reply, sizeof(reply), 0), 0) << "then closed";
  // The switch still works for real ports.
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  ASSERT_TRUE(a && b);
  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 5));
  EXPECT_TRUE(receive_within(*b));
  EXPECT_EQ(status().ports.size(), 2U);
}

TEST_F(SwitchDaemonTest, SpoofedSourceAddressesAreDroppedAndCountedUnlessAllowed) {
  start();
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  auto c = plug("c", mac(3), /*spoofing=*/true);
  ASSERT_TRUE(a && b && c);
  // b announces itself; a's own address passes.
  send_frame(*b, frame(MacAddress::broadcast(), mac(2), 1));
  ASSERT_TRUE(receive_within(*a));
  ASSERT_TRUE(receive_within(*c));
  send_frame(*a, frame(MacAddress::broadcast(), mac(1), 2));
  EXPECT_EQ(tag_of(receive_within(*b).value()), 2U);
  EXPECT_EQ(tag_of(receive_within(*c).value()), 2U);

  // a claims b's address (to steal its traffic) and a made-up one: both dropped.
  send_frame(*a, frame(MacAddress::broadcast(), mac(2), 3));
  send_frame(*a, frame(mac(3), mac(77), 4));
  EXPECT_FALSE(receive_within(*b, kQuiet));
  EXPECT_FALSE(receive_within(*c, kQuiet));
  // b's traffic still goes to b, not to a.
  send_frame(*c, frame(mac(2), mac(3), 5));
  EXPECT_EQ(tag_of(receive_within(*b).value()), 5U);
  EXPECT_FALSE(receive_within(*a, kQuiet));

  // c has spoofing on: another source passes and is learned on c.
  send_frame(*c, frame(MacAddress::broadcast(), mac(9), 6));
  EXPECT_EQ(tag_of(receive_within(*a).value()), 6U);
  EXPECT_EQ(tag_of(receive_within(*b).value()), 6U);

  SwitchStatus seen = status();
  const auto* a_status = port_status(seen, a->port_id());
  const auto* c_status = port_status(seen, c->port_id());
  ASSERT_TRUE(a_status && c_status);
  EXPECT_EQ(a_status->spoofed_frames, 2U);
  EXPECT_EQ(a_status->received_frames, 1U) << "spoofed frames are not switched";
  EXPECT_EQ(a_status->mac, mac(1).to_string());
  EXPECT_FALSE(a_status->mac_spoofing);
  EXPECT_EQ(c_status->spoofed_frames, 0U);
  EXPECT_TRUE(c_status->mac_spoofing);
  for (const auto& entry : seen.macs) {
    EXPECT_NE(entry.address, mac(77).to_string()) << "a spoofed source is never learned";
    if (entry.address == mac(2).to_string()) {
      EXPECT_EQ(entry.port, b->port_id());
    }
  }
}

TEST_F(SwitchDaemonTest, AddressFloodFromASpoofingPortIsCappedAndOthersStayLearned) {
  SwitchDaemonOptions options;
  options.max_macs_per_port = 8;
  start(options);
  auto a = plug("a", mac(1));
  auto b = plug("b", mac(2));
  auto flooder = plug("flooder", mac(3), /*spoofing=*/true);
  ASSERT_TRUE(a && b && flooder);
  send_frame(*b, frame(MacAddress::broadcast(), mac(2), 1));
  ASSERT_TRUE(receive_within(*a));
  ASSERT_TRUE(receive_within(*flooder));
  // 500 made-up sources, each a unicast frame to a (learned below) so nothing floods to b.
  send_frame(*a, frame(mac(2), mac(1), 2));
  ASSERT_TRUE(receive_within(*b));
  constexpr int kSources = 500;
  for (int i = 0; i < kSources; ++i) {
    MacAddress source({0x02, 0x10, 0x00, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i), 1});
    send_frame(*flooder, frame(mac(1), source, 100 + i));
  }
  SwitchStatus seen;
  for (int i = 0; i < 200; ++i) {
    seen = status();
    const auto* port = port_status(seen, flooder->port_id());
    if (port != nullptr && port->received_frames == kSources) break;
    std::this_thread::sleep_for(10ms);
  }
  const auto* flooder_status = port_status(seen, flooder->port_id());
  ASSERT_NE(flooder_status, nullptr);
  EXPECT_EQ(flooder_status->received_frames, uint64_t{kSources});
  EXPECT_EQ(flooder_status->unlearned_sources, uint64_t{kSources - 8});
  EXPECT_EQ(seen.unlearned_sources, uint64_t{kSources - 8});
  size_t learned_on_flooder = 0;
  for (const auto& entry : seen.macs) learned_on_flooder += entry.port == flooder->port_id();
  EXPECT_EQ(learned_on_flooder, 8U);
  EXPECT_EQ(seen.max_macs_per_port, 8U);
  // The others' addresses stayed learned: a's frame to b goes to b only.
  send_frame(*a, frame(mac(2), mac(1), 3));
  EXPECT_EQ(tag_of(receive_within(*b).value()), 3U);
  while (auto got = receive_within(*flooder, kQuiet)) {
    EXPECT_NE(tag_of(*got), 3U) << "known unicast must not flood";
  }
}

TEST_F(SwitchDaemonTest, VersionOnePortHelloIsRefused) {
  start();
  UniqueFd old(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  auto path = (runtime_.path() / "lamina/switch/lab.sock").string();
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(old.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  const std::string hello = R"({"lamina_switch": 1, "role": "port", "label": "old"})";
  ASSERT_GT(::send(old.get(), hello.data(), hello.size(), 0), 0);
  char reply[512];
  ssize_t length = ::recv(old.get(), reply, sizeof(reply), 0);
  ASSERT_GT(length, 0);
  EXPECT_NE(std::string(reply, length).find("speaks version 2"), std::string::npos);
  EXPECT_TRUE(status().ports.empty());
}

}  // namespace
}  // namespace lamina::net
