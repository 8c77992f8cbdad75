// TapPort against the real kernel: each test moves itself into a fresh network namespace
// (unshare; root, or an unprivileged user namespace where allowed), makes a tap interface,
// gives the host side an address and talks ARP and ICMP with the kernel through the tap.

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "net/tap_port.h"
#include "net_test_support.h"

namespace lamina::net {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kHostAddress = 0x0a4d0001;   // 10.77.0.1, the kernel's side of the tap
constexpr uint32_t kGuestAddress = 0x0a4d0002;  // 10.77.0.2, "the guest" this test plays
const MacAddress kGuestMac({0x02, 0x4c, 0x41, 0x4d, 0x00, 0x02});

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream file(path);
  file << text;
  return static_cast<bool>(file.flush());
}

// Moves this process into a new network namespace; the reason it cannot otherwise.
std::string enter_network_namespace() {
  if (::access("/dev/net/tun", F_OK) != 0) return "/dev/net/tun does not exist";
  if (::unshare(CLONE_NEWNET) == 0) return "";
  uid_t uid = ::getuid();
  gid_t gid = ::getgid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
    return fmt::format("cannot make a network namespace (unshare: {})", std::strerror(errno));
  }
  // Become root of the new user namespace, so we hold CAP_NET_ADMIN over the new netns.
  write_file("/proc/self/setgroups", "deny");
  if (!write_file("/proc/self/uid_map", fmt::format("0 {} 1", uid)) ||
      !write_file("/proc/self/gid_map", fmt::format("0 {} 1", gid))) {
    return "cannot map the user into its user namespace";
  }
  return "";
}

// Host-side setup through ioctls, like `ip addr add 10.77.0.1/24 dev NAME; ip link set up`.
void configure_interface(const std::string& name, uint32_t address, bool up) {
  UniqueFd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(socket);
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  auto* inet = reinterpret_cast<sockaddr_in*>(&request.ifr_addr);
  inet->sin_family = AF_INET;
  inet->sin_addr.s_addr = htonl(address);
  ASSERT_EQ(::ioctl(socket.get(), SIOCSIFADDR, &request), 0) << std::strerror(errno);
  inet->sin_addr.s_addr = htonl(0xffffff00);
  ASSERT_EQ(::ioctl(socket.get(), SIOCSIFNETMASK, &request), 0) << std::strerror(errno);
  ASSERT_EQ(::ioctl(socket.get(), SIOCGIFFLAGS, &request), 0);
  request.ifr_flags =
      static_cast<short>(up ? request.ifr_flags | IFF_UP : request.ifr_flags & ~IFF_UP);
  ASSERT_EQ(::ioctl(socket.get(), SIOCSIFFLAGS, &request), 0) << std::strerror(errno);
}

MacAddress interface_mac(const std::string& name) {
  UniqueFd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  EXPECT_EQ(::ioctl(socket.get(), SIOCGIFHWADDR, &request), 0);
  std::array<uint8_t, 6> bytes{};
  std::memcpy(bytes.data(), request.ifr_hwaddr.sa_data, 6);
  return MacAddress(bytes);
}

void put16(std::vector<std::byte>& frame, size_t offset, uint16_t value) {
  frame[offset] = std::byte(value >> 8);
  frame[offset + 1] = std::byte(value & 0xff);
}
void put32(std::vector<std::byte>& frame, size_t offset, uint32_t value) {
  put16(frame, offset, static_cast<uint16_t>(value >> 16));
  put16(frame, offset + 2, static_cast<uint16_t>(value));
}
uint16_t get16(const std::vector<std::byte>& frame, size_t offset) {
  return static_cast<uint16_t>((static_cast<unsigned>(frame[offset]) << 8) |
                               static_cast<unsigned>(frame[offset + 1]));
}
uint32_t get32(const std::vector<std::byte>& frame, size_t offset) {
  return (uint32_t{get16(frame, offset)} << 16) | get16(frame, offset + 2);
}
void put_mac(std::vector<std::byte>& frame, size_t offset, const MacAddress& address) {
  std::memcpy(frame.data() + offset, address.bytes().data(), 6);
}
MacAddress get_mac(const std::vector<std::byte>& frame, size_t offset) {
  return MacAddress::from_bytes(std::span<const std::byte, 6>(frame.data() + offset, 6));
}

// RFC 1071 Internet checksum.
uint16_t internet_checksum(const std::vector<std::byte>& frame, size_t offset, size_t length) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < length; i += 2) sum += get16(frame, offset + i);
  if (length % 2 != 0) sum += static_cast<uint32_t>(frame[offset + length - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// RFC 826 ARP for IPv4 over Ethernet.
std::vector<std::byte> arp(uint16_t operation, const MacAddress& sender_mac, uint32_t sender_ip,
                           const MacAddress& target_mac, uint32_t target_ip,
                           const MacAddress& destination) {
  std::vector<std::byte> frame(42);
  put_mac(frame, 0, destination);
  put_mac(frame, 6, sender_mac);
  put16(frame, 12, 0x0806);
  put16(frame, 14, 1);       // hardware: Ethernet
  put16(frame, 16, 0x0800);  // protocol: IPv4
  frame[18] = std::byte{6};
  frame[19] = std::byte{4};
  put16(frame, 20, operation);
  put_mac(frame, 22, sender_mac);
  put32(frame, 28, sender_ip);
  put_mac(frame, 32, target_mac);
  put32(frame, 38, target_ip);
  return frame;
}

// RFC 792 echo request in an RFC 791 IPv4 packet.
std::vector<std::byte> echo_request(const MacAddress& destination, uint16_t sequence) {
  const std::string payload = "lamina tap test";
  std::vector<std::byte> frame(14 + 20 + 8 + payload.size());
  put_mac(frame, 0, destination);
  put_mac(frame, 6, kGuestMac);
  put16(frame, 12, 0x0800);
  frame[14] = std::byte{0x45};
  put16(frame, 16, static_cast<uint16_t>(20 + 8 + payload.size()));
  put16(frame, 18, 0x1234);   // identification
  frame[22] = std::byte{64};  // TTL
  frame[23] = std::byte{1};   // ICMP
  put32(frame, 26, kGuestAddress);
  put32(frame, 30, kHostAddress);
  put16(frame, 24, internet_checksum(frame, 14, 20));
  frame[34] = std::byte{8};  // echo request
  put16(frame, 38, 0x4c4d);  // identifier
  put16(frame, 40, sequence);
  std::memcpy(frame.data() + 42, payload.data(), payload.size());
  put16(frame, 36, internet_checksum(frame, 34, 8 + payload.size()));
  return frame;
}

class TapPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = enter_network_namespace();
    if (!why.empty()) GTEST_SKIP() << "no network namespace for the tap test: " << why;
  }
};

TEST_F(TapPortTest, KernelAnswersArpAndPingThroughTheTap) {
  auto tap = TapPort::open("lamtap0");
  ASSERT_TRUE(tap) << tap.error().message();
  EXPECT_EQ((*tap)->description(), "tap:lamtap0");
  configure_interface("lamtap0", kHostAddress, /*up=*/true);
  MacAddress host_mac = interface_mac("lamtap0");

  // Who has 10.77.0.1? Tell 10.77.0.2.
  testing::send_frame(
      **tap, arp(1, kGuestMac, kGuestAddress, MacAddress(), kHostAddress, MacAddress::broadcast()));
  bool answered = false;
  auto deadline = std::chrono::steady_clock::now() + 3s;
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    auto frame = testing::receive_within(**tap, 500ms);
    if (!frame || frame->size() < 42 || get16(*frame, 12) != 0x0806) continue;  // IPv6 noise
    EXPECT_EQ(get16(*frame, 20), 2) << "an ARP reply";
    EXPECT_EQ(get_mac(*frame, 0), kGuestMac);
    EXPECT_EQ(get_mac(*frame, 22), host_mac);
    EXPECT_EQ(get32(*frame, 28), kHostAddress);
    EXPECT_EQ(get32(*frame, 38), kGuestAddress);
    answered = true;
  }
  ASSERT_TRUE(answered) << "the kernel did not answer the ARP request";

  auto request = echo_request(host_mac, 7);
  testing::send_frame(**tap, request);
  bool replied = false;
  deadline = std::chrono::steady_clock::now() + 3s;
  while (!replied && std::chrono::steady_clock::now() < deadline) {
    auto frame = testing::receive_within(**tap, 500ms);
    if (!frame || frame->size() < 14) continue;
    if (get16(*frame, 12) == 0x0806 && get16(*frame, 20) == 1 &&
        get32(*frame, 38) == kGuestAddress) {
      // The kernel asks for us before answering: reply as the guest would.
      testing::send_frame(**tap,
                          arp(2, kGuestMac, kGuestAddress, host_mac, kHostAddress, host_mac));
      continue;
    }
    if (get16(*frame, 12) != 0x0800 || frame->size() < request.size() ||
        static_cast<uint8_t>((*frame)[23]) != 1) {
      continue;
    }
    EXPECT_EQ(static_cast<uint8_t>((*frame)[34]), 0) << "an echo reply";
    EXPECT_EQ(get32(*frame, 26), kHostAddress);
    EXPECT_EQ(get32(*frame, 30), kGuestAddress);
    EXPECT_EQ(get16(*frame, 38), 0x4c4d);
    EXPECT_EQ(get16(*frame, 40), 7);
    EXPECT_TRUE(std::equal(request.begin() + 42, request.end(), frame->begin() + 42))
        << "the payload comes back unchanged";
    EXPECT_EQ(internet_checksum(*frame, 34, frame->size() - 34), 0) << "a valid ICMP checksum";
    replied = true;
  }
  ASSERT_TRUE(replied) << "no echo reply from the kernel";
  auto stats = (*tap)->stats();
  EXPECT_GE(stats.sent_frames, 2U);
  EXPECT_GE(stats.received_frames, 2U);
  EXPECT_EQ(stats.dropped_frames, 0U);
}

TEST_F(TapPortTest, AttachesToAnExistingTapAndSeesItGoAway) {
  {
    // A persistent tap, as `ip tuntap add dev lamtap1 mode tap` makes it.
    UniqueFd maker(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(maker);
    ifreq request{};
    std::strcpy(request.ifr_name, "lamtap1");
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    ASSERT_EQ(::ioctl(maker.get(), TUNSETIFF, &request), 0) << std::strerror(errno);
    ASSERT_EQ(::ioctl(maker.get(), TUNSETPERSIST, 1), 0) << std::strerror(errno);
  }
  auto tap = TapPort::open("lamtap1");
  ASSERT_TRUE(tap) << tap.error().message();
  // A second user of a single-queue tap is refused with a reason.
  auto second = TapPort::open("lamtap1");
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("tap lamtap1: it is in use by another program"),
            std::string::npos)
      << second.error().message();

  // Nothing to read on a quiet tap: "nothing now", not an error.
  std::vector<std::byte> buffer(kMaxFrameSize);
  auto nothing = (*tap)->receive(buffer);
  ASSERT_TRUE(nothing) << nothing.error().message();
  EXPECT_FALSE(*nothing);

  // A tap that is down takes frames and drops them (a cable to a switched-off host): sent,
  // and counted as dropped.
  auto down = (*tap)->send(testing::frame(MacAddress::broadcast(), kGuestMac, 1));
  ASSERT_TRUE(down) << down.error().message();
  EXPECT_EQ(*down, SendStatus::kSent);
  EXPECT_EQ((*tap)->stats().dropped_frames, 1U);
  EXPECT_EQ((*tap)->stats().sent_frames, 0U);

  // Deleting the interface under the port kills it for good, both ways.
  ASSERT_EQ(std::system("ip link delete lamtap1"), 0);
  auto gone = (*tap)->send(testing::frame(MacAddress::broadcast(), kGuestMac, 2));
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code(), ErrorCode::kIo);
  EXPECT_NE(gone.error().message().find("tap:lamtap1"), std::string::npos);
  auto gone_receive = (*tap)->receive(buffer);
  ASSERT_FALSE(gone_receive);
  EXPECT_EQ(gone_receive.error().code(), ErrorCode::kIo);
}

TEST_F(TapPortTest, RefusesWhatIsNotATapNamingWhy) {
  auto loopback = TapPort::open("lo");
  ASSERT_FALSE(loopback);
  EXPECT_EQ(loopback.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(loopback.error().message().find("exists and is not a tap"), std::string::npos)
      << loopback.error().message();
  for (const char* bad : {"", "a/b", "has space", "0123456789abcdef", ".."}) {
    auto refused = TapPort::open(bad);
    ASSERT_FALSE(refused) << bad;
    EXPECT_EQ(refused.error().code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(refused.error().message().find("is not an interface name"), std::string::npos);
  }
  auto tap = TapPort::open("lamtap2");
  ASSERT_TRUE(tap);
  std::vector<std::byte> runt(10);
  auto sent = (*tap)->send(runt);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(TapPortTest, UnprivilegedUserGetsAnActionableError) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to drop to another user";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // nobody: no access to /dev/net/tun (mode 0600 root) and no CAP_NET_ADMIN.
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
        ::setresuid(65534, 65534, 65534) != 0) {
      ::_exit(10);
    }
    auto tap = TapPort::open("lamtap3");
    if (tap) ::_exit(11);
    bool names_fix =
        tap.error().message().find("needs read and write access") != std::string::npos ||
        tap.error().message().find("ip tuntap add dev lamtap3") != std::string::npos;
    std::fprintf(stderr, "%s\n", tap.error().message().c_str());
    ::_exit(names_fix ? 0 : 12);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace lamina::net
