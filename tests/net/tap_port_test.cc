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
#include "host_network.h"
#include "net_test_support.h"

namespace lamina::net {
namespace {

using namespace std::chrono_literals;
using namespace testing;

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
