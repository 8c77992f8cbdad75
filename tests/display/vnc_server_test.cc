#include "display/vnc_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>

#include "vnc_test_client.h"

namespace lamina::display {
namespace {

using namespace std::chrono_literals;

// A screen that changes when the test says so, and records the input the server passes on.
struct FakeScreen {
  std::mutex mutex;
  hw::Frame frame;
  std::atomic<uint64_t> generation{1};
  std::vector<uint8_t> keys;
  std::vector<PointerEvent> moves;

  ScreenSource source() {
    return {
        .generation = [this] { return generation.load(); },
        .frame = [this]() -> Result<hw::Frame> {
          std::lock_guard lock(mutex);
          return frame;
        },
        .keyboard =
            [this](std::span<const uint8_t> bytes) {
              std::lock_guard lock(mutex);
              keys.insert(keys.end(), bytes.begin(), bytes.end());
            },
        .pointer =
            [this](const PointerEvent& event) {
              std::lock_guard lock(mutex);
              moves.push_back(event);
            },
    };
  }
};

uint16_t port_of(int listening) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  ::getsockname(listening, reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

using Client = test_support::VncTestClient;

hw::Frame pattern(uint32_t width, uint32_t height, uint32_t seed) {
  hw::Frame frame;
  frame.resize(width, height);
  for (size_t index = 0; index < frame.pixels.size(); ++index) {
    frame.pixels[index] = static_cast<uint32_t>((index * 2654435761u + seed) & 0xffffff);
  }
  return frame;
}

bool matches(Client& client, const hw::Frame& frame) {
  if (client.get()->width != int(frame.width) || client.get()->height != int(frame.height)) {
    return false;
  }
  for (uint32_t y = 0; y < frame.height; ++y) {
    for (uint32_t x = 0; x < frame.width; ++x) {
      if (client.pixel(int(x), int(y)) != frame.pixels[y * frame.width + x]) return false;
    }
  }
  return true;
}

class VncServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    screen.frame = pattern(64, 32, 1);
    auto listening = listen_tcp("127.0.0.1", 0);
    ASSERT_TRUE(listening) << listening.error().message();
    port = port_of(listening->get());
    auto created = VncServer::create(std::move(*listening), screen.source(), "test");
    ASSERT_TRUE(created) << created.error().message();
    server = std::move(*created);
    server->start();
  }

  FakeScreen screen;
  uint16_t port = 0;
  std::unique_ptr<VncServer> server;
};

TEST_F(VncServerTest, ClientGetsTheScreenAndItsChangesAndResizes) {
  Client client("127.0.0.1", port);
  ASSERT_TRUE(client.connected());
  EXPECT_TRUE(client.pump_until([&] { return matches(client, screen.frame); }));
  {
    std::lock_guard lock(screen.mutex);
    screen.frame.pixels[5 * 64 + 7] = 0x123456;
  }
  screen.generation++;
  EXPECT_TRUE(client.pump_until([&] { return client.pixel(7, 5) == 0x123456; }));
  {
    std::lock_guard lock(screen.mutex);
    screen.frame = pattern(40, 24, 9);
  }
  screen.generation++;
  EXPECT_TRUE(client.pump_until([&] { return matches(client, screen.frame); }));
}

TEST_F(VncServerTest, KeysAndPointerReachTheInputFunctions) {
  Client client("127.0.0.1", port);
  ASSERT_TRUE(client.connected());
  SendKeyEvent(client.get(), 'a', TRUE);
  SendKeyEvent(client.get(), 'a', FALSE);
  SendKeyEvent(client.get(), 0xff52, TRUE);  // Up
  SendPointerEvent(client.get(), 10, 10, 0);
  SendPointerEvent(client.get(), 13, 8, rfbButton1Mask | rfbButton3Mask);
  SendPointerEvent(client.get(), 13, 8, rfbButton4Mask);  // a wheel click up, buttons let go
  auto received = [&] {
    std::lock_guard lock(screen.mutex);
    return screen.keys.size() >= 4 && screen.moves.size() >= 3;
  };
  EXPECT_TRUE(client.pump_until(received));
  std::lock_guard lock(screen.mutex);
  EXPECT_EQ(screen.keys, (std::vector<uint8_t>{0x1e, 0x9e, 0xe0, 0x48}));
  // The first pointer event gives the position on the 64x32 screen and no move; the second
  // moves right 3, up 2, with the left and right buttons (PS/2 bits 0 and 1); the third is
  // the wheel.
  ASSERT_EQ(screen.moves.size(), 3u);
  EXPECT_EQ(screen.moves[0], (PointerEvent{.x = 10, .y = 10, .width = 64, .height = 32}));
  EXPECT_EQ(screen.moves[1], (PointerEvent{.x = 13, .y = 8, .width = 64, .height = 32, .dx = 3,
                                           .dy = 2, .buttons = 3}));
  EXPECT_EQ(screen.moves[2], (PointerEvent{.x = 13, .y = 8, .width = 64, .height = 32, .wheel = 1}));
}

TEST_F(VncServerTest, GarbageFromAClientLeavesTheServerServing) {
  std::mt19937 random(7);
  for (int round = 0; round < 20; ++round) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    std::vector<uint8_t> junk(1 + random() % 4096);
    for (uint8_t& byte : junk) byte = static_cast<uint8_t>(random());
    // Half the rounds speak the protocol's start first, so the junk reaches the message parser.
    if (round % 2 == 0) {
      char version[12];
      (void)::recv(fd, version, sizeof(version), MSG_WAITALL);
      const char hello[] = "RFB 003.008\n\x01\x01";
      (void)::send(fd, hello, sizeof(hello) - 1, MSG_NOSIGNAL);
    }
    (void)::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
    ::close(fd);
  }
  Client client("127.0.0.1", port);
  ASSERT_TRUE(client.connected());
  EXPECT_TRUE(client.pump_until([&] { return matches(client, screen.frame); }));
}

}  // namespace
}  // namespace lamina::display
