// virtio-console behind the real transport: guest output through transmitq, host input through
// receiveq, flow control when the host end is full, the emergency write, and the real
// HostConsolePort end to end over a Unix socket and into a file.

#include "virtio/virtio_console.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "pci_harness.h"
#include "virtio/host_console_port.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace pci;
using testing::PciHarness;
using testing::TestDriver;

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kVersion1 = uint64_t{1} << 32;

// The host end held in memory, with an adjustable output capacity.
class MemoryBackend final : public ConsoleBackend {
 public:
  void set_listener(Listener* listener) override { listener_ = listener; }
  size_t input_pending() const override { return input.size(); }
  size_t read(std::span<std::byte> out) override {
    const size_t taken = std::min(out.size(), input.size());
    for (size_t i = 0; i < taken; ++i) {
      out[i] = input.front();
      input.pop_front();
    }
    return taken;
  }
  bool output_ready() const override { return output.size() < capacity; }
  void write(std::span<const std::byte> data) override {
    for (std::byte byte : data) output.push_back(static_cast<char>(byte));
  }

  void type(std::string_view text) {
    for (char c : text) input.push_back(static_cast<std::byte>(c));
    if (listener_ != nullptr) listener_->input_available();
  }
  void drain() {
    drained += output;
    output.clear();
    if (listener_ != nullptr) listener_->output_space();
  }

  std::deque<std::byte> input;
  std::string output;
  std::string drained;
  size_t capacity = 1 << 20;
  Listener* listener_ = nullptr;
};

std::string text_of(const std::vector<std::byte>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

class VirtioConsoleTest : public ::testing::Test {
 protected:
  VirtioConsoleTest() : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))), dma_(memory_) {}

  void start(ConsoleBackend& host_end) {
    harness_.emplace(std::make_unique<VirtioConsole>(host_end), dma_);
    ASSERT_TRUE(harness_->negotiate(kVersion1 | kConsoleFeatureEmergencyWrite));
    harness_->setup_queue(VirtioConsole::kReceiveQueue, receive_.layout());
    harness_->setup_queue(VirtioConsole::kTransmitQueue, transmit_.layout());
    harness_->driver_ok();
  }
  void send(std::string_view text) {
    const uint64_t buffer = transmit_.allocate(static_cast<uint32_t>(text.size()));
    ASSERT_TRUE(memory_.write(buffer, std::as_bytes(std::span(text.data(), text.size()))));
    transmit_.add_chain({{buffer, static_cast<uint32_t>(text.size()), false}});
    harness_->kick(VirtioConsole::kTransmitQueue);
  }
  uint64_t offer_receive_buffer(uint32_t length) {
    const uint64_t buffer = receive_.allocate(length);
    receive_.add_chain({{buffer, length, true}});
    harness_->kick(VirtioConsole::kReceiveQueue);
    return buffer;
  }

  GuestMemory memory_;
  DmaMemory dma_;
  MemoryBackend backend;  // before the harness: the device detaches from it on destruction
  std::optional<PciHarness> harness_;
  TestDriver receive_{memory_, 8, 0x10000, 0x100000};
  TestDriver transmit_{memory_, 8, 0x20000, 0x200000};
};

TEST_F(VirtioConsoleTest, OutputInputAndEmergencyWrite) {
  start(backend);
  EXPECT_EQ(harness_->config(0x00), 0x10431af4u);
  EXPECT_TRUE(harness_->device_features() & kConsoleFeatureEmergencyWrite);
  EXPECT_FALSE(harness_->device_features() & kConsoleFeatureMultiport);
  EXPECT_EQ(harness_->read(CapabilityType::kDevice, 4, 4), 0u) << "max_nr_ports";

  send("hello, host");
  EXPECT_EQ(backend.output, "hello, host");
  ASSERT_EQ(transmit_.used_index(), 1);
  EXPECT_EQ(transmit_.used_element(0).second, 0u) << "the device wrote nothing into it";

  // Input typed before the driver offers a buffer waits, then fills the buffer.
  backend.type("abc");
  EXPECT_EQ(receive_.used_index(), 0);
  const uint64_t first = offer_receive_buffer(16);
  ASSERT_EQ(receive_.used_index(), 1);
  EXPECT_EQ(receive_.used_element(0).second, 3u);
  EXPECT_EQ(text_of(receive_.read_bytes(first, 3)), "abc");
  // Input longer than a buffer spreads over several.
  const uint64_t second = offer_receive_buffer(4);
  const uint64_t third = offer_receive_buffer(4);
  backend.type("0123456");
  ASSERT_EQ(receive_.used_index(), 3);
  EXPECT_EQ(text_of(receive_.read_bytes(second, 4)), "0123");
  EXPECT_EQ(receive_.used_element(2).second, 3u);
  EXPECT_EQ(text_of(receive_.read_bytes(third, 3)), "456");

  harness_->write(CapabilityType::kDevice, VirtioConsole::kEmergencyWriteOffset, 4, '!');
  EXPECT_EQ(backend.output, "hello, host!");
}

TEST_F(VirtioConsoleTest, FullHostEndHoldsTheTransmitQueue) {
  backend.capacity = 4;
  start(backend);
  send("12345");
  send("678");
  EXPECT_EQ(backend.output, "12345") << "the second buffer waits for room";
  EXPECT_EQ(transmit_.used_index(), 1);
  backend.drain();
  EXPECT_EQ(backend.drained + backend.output, "12345678");
  EXPECT_EQ(transmit_.used_index(), 2);
}

TEST_F(VirtioConsoleTest, ResetStopsTheDevice) {
  start(backend);
  harness_->set_status(0);
  backend.type("lost?");
  send("x");
  EXPECT_EQ(backend.output, "");
  EXPECT_EQ(receive_.used_index(), 0);
  EXPECT_EQ(backend.input_pending(), 5u) << "input stays for the next driver";
}

// Waits up to 5 s for `condition`.
template <typename Condition>
bool eventually(Condition condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

TEST_F(VirtioConsoleTest, HostSocketCarriesBothDirections) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("lamina-console-test-" + std::to_string(::getpid()) + ".sock");
  auto port = HostConsolePort::open_socket(path);
  ASSERT_TRUE(port) << port.error().message();
  start(**port);
  // Written before any client connects: kept for the client.
  send("early ");

  const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(client, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  send("from-guest");
  std::string received;
  while (received.size() < 16) {
    char buffer[64];
    timeval timeout{5, 0};
    ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    const ssize_t got = ::recv(client, buffer, sizeof(buffer), 0);
    ASSERT_GT(got, 0) << "no guest output on the socket";
    received.append(buffer, static_cast<size_t>(got));
  }
  EXPECT_EQ(received, "early from-guest");

  const uint64_t buffer = offer_receive_buffer(32);
  (void)harness_->read_isr();  // the transmit interrupts so far
  ASSERT_FALSE(harness_->intx().level());
  ASSERT_EQ(::send(client, "from-host", 9, MSG_NOSIGNAL), 9);
  // The interrupt (a mutex in the test line) orders the device's ring writes before the reads.
  ASSERT_TRUE(eventually([&] { return harness_->intx().level(); }));
  ASSERT_GE(receive_.used_index(), 1);
  EXPECT_EQ(text_of(receive_.read_bytes(buffer, receive_.used_element(0).second)), "from-host");
  ::close(client);
  harness_.reset();
  port->reset();
  EXPECT_FALSE(std::filesystem::exists(path)) << "the socket file is removed";
}

// Connects a stream client to the console socket at `path`; -1 on failure.
int connect_client(const std::filesystem::path& path) {
  const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (client >= 0 &&
      ::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    ::close(client);
    return -1;
  }
  return client;
}

std::filesystem::path test_socket_path(std::string_view what) {
  return std::filesystem::temp_directory_path() /
         fmt::format("lamina-console-{}-{}.sock", what, ::getpid());
}

TEST_F(VirtioConsoleTest, EmergencyWriteFloodWithoutClientKeepsNewestBytesBounded) {
  const auto path = test_socket_path("flood");
  auto port = HostConsolePort::open_socket(path);
  ASSERT_TRUE(port) << port.error().message();
  start(**port);
  // Three times the bound, one byte per register write, as a hostile guest does it; the pattern
  // tells which bytes survived.
  constexpr size_t kLimit = HostConsolePort::kOutputLimit;
  constexpr size_t kWrites = 3 * kLimit + 123;
  auto pattern = [](size_t i) { return static_cast<char>('a' + (i * 7 + i / 251) % 26); };
  for (size_t i = 0; i < kWrites; ++i) {
    harness_->write(CapabilityType::kDevice, VirtioConsole::kEmergencyWriteOffset, 4,
                    static_cast<uint8_t>(pattern(i)));
  }
  EXPECT_EQ((*port)->output_pending(), kLimit) << "host memory stays bounded";
  EXPECT_EQ((*port)->dropped_output_bytes(), kWrites - kLimit);

  // A client that comes now gets exactly the newest kLimit bytes, in order.
  const int client = connect_client(path);
  ASSERT_GE(client, 0);
  timeval timeout{5, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string received;
  while (received.size() < kLimit) {
    char buffer[8192];
    const ssize_t got = ::recv(client, buffer, sizeof(buffer), 0);
    ASSERT_GT(got, 0) << "after " << received.size() << " bytes";
    received.append(buffer, static_cast<size_t>(got));
  }
  ASSERT_EQ(received.size(), kLimit);
  std::string expected;
  for (size_t i = kWrites - kLimit; i < kWrites; ++i) expected.push_back(pattern(i));
  EXPECT_EQ(received, expected);
  EXPECT_TRUE(eventually([&] { return (*port)->output_pending() == 0; }));
  ::close(client);
  harness_.reset();
  port->reset();
}

TEST_F(VirtioConsoleTest, OversizedHostWritesAreCutToTheLimitAndCounted) {
  const auto path = test_socket_path("oversized");
  auto port = HostConsolePort::open_socket(path);
  ASSERT_TRUE(port) << port.error().message();
  std::vector<std::byte> chunk(HostConsolePort::kOutputLimit / 3 + 17, std::byte{'x'});
  uint64_t written = 0;
  for (int i = 0; i < 64; ++i) {
    (*port)->write(chunk);
    written += chunk.size();
    ASSERT_LE((*port)->output_pending(), HostConsolePort::kOutputLimit);
  }
  std::vector<std::byte> huge(4 * HostConsolePort::kOutputLimit, std::byte{'y'});
  (*port)->write(huge);
  written += huge.size();
  EXPECT_EQ((*port)->output_pending(), HostConsolePort::kOutputLimit);
  EXPECT_EQ((*port)->dropped_output_bytes(), written - HostConsolePort::kOutputLimit);
  EXPECT_FALSE((*port)->output_ready()) << "flow control still holds the transmit queue";
}

TEST_F(VirtioConsoleTest, ConsoleSocketIsPrivateAndALiveOneIsNeverReplaced) {
  const auto path = test_socket_path("private");
  const mode_t old_mask = ::umask(0);
  auto port = HostConsolePort::open_socket(path);
  ::umask(old_mask);
  ASSERT_TRUE(port) << port.error().message();
  struct stat status {};
  ASSERT_EQ(::lstat(path.c_str(), &status), 0);
  EXPECT_TRUE(S_ISSOCK(status.st_mode));
  EXPECT_EQ(status.st_mode & 0777, 0600u) << "only the user may reach the guest's console";

  // A second VM asking for the same path must not take the first one's console.
  auto second = HostConsolePort::open_socket(path);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("is in use"), std::string::npos)
      << second.error().message();
  const int client = connect_client(path);
  EXPECT_GE(client, 0) << "the first port still listens";
  if (client >= 0) ::close(client);
  port->reset();
  EXPECT_FALSE(std::filesystem::exists(path));

  // A socket nobody listens on (a killed run's) is replaced.
  const int stale = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ::close(stale);
  ASSERT_TRUE(std::filesystem::exists(path));
  auto replaced = HostConsolePort::open_socket(path);
  ASSERT_TRUE(replaced) << replaced.error().message();
  const int after = connect_client(path);
  EXPECT_GE(after, 0);
  if (after >= 0) ::close(after);
  replaced->reset();

  // Anything else at the path is refused and left alone.
  { std::ofstream(path) << "data"; }
  auto refused = HostConsolePort::open_socket(path);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("exists and is not a socket"), std::string::npos);
  EXPECT_TRUE(std::filesystem::is_regular_file(path));
  std::filesystem::remove(path);
}

TEST_F(VirtioConsoleTest, HostFileReceivesOutput) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("lamina-console-test-" + std::to_string(::getpid()) + ".txt");
  auto port = HostConsolePort::open_file(path);
  ASSERT_TRUE(port) << port.error().message();
  start(**port);
  send("line one\n");
  send("line two\n");
  auto contents = [&] {
    std::ifstream file(path);
    return std::string(std::istreambuf_iterator<char>(file), {});
  };
  EXPECT_TRUE(eventually([&] { return contents() == "line one\nline two\n"; })) << contents();
  harness_.reset();
  port->reset();
  std::filesystem::remove(path);
  EXPECT_FALSE(HostConsolePort::open_socket("/nonexistent-folder/x.sock"));
  EXPECT_FALSE(HostConsolePort::open_socket(std::string(200, 'a')));
}

}  // namespace
}  // namespace lamina::virtio
