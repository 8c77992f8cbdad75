#pragma once
// Host networking helpers for tests that talk to the kernel through a tap: entering a private
// network namespace, configuring an interface with ioctls, and building ARP (RFC 826) and ICMP
// echo (RFC 792 in RFC 791 IPv4) frames as a guest at 10.77.0.2 would.

#include <arpa/inet.h>
#include <fmt/format.h>
#include <linux/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "net/mac_address.h"
#include "base/unique_fd.h"

namespace lamina::net::testing {

inline constexpr uint32_t kHostAddress = 0x0a4d0001;   // 10.77.0.1, the kernel's side of the tap
inline constexpr uint32_t kGuestAddress = 0x0a4d0002;  // 10.77.0.2, "the guest" this test plays
inline const MacAddress kGuestMac({0x02, 0x4c, 0x41, 0x4d, 0x00, 0x02});

inline bool write_file(const std::string& path, const std::string& text) {
  std::ofstream file(path);
  file << text;
  return static_cast<bool>(file.flush());
}

// Moves this process into a new network namespace; the reason it cannot otherwise.
inline std::string enter_network_namespace() {
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
inline void configure_interface(const std::string& name, uint32_t address, bool up) {
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

inline MacAddress interface_mac(const std::string& name) {
  UniqueFd socket(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  EXPECT_EQ(::ioctl(socket.get(), SIOCGIFHWADDR, &request), 0);
  std::array<uint8_t, 6> bytes{};
  std::memcpy(bytes.data(), request.ifr_hwaddr.sa_data, 6);
  return MacAddress(bytes);
}

inline void put16(std::vector<std::byte>& frame, size_t offset, uint16_t value) {
  frame[offset] = std::byte(value >> 8);
  frame[offset + 1] = std::byte(value & 0xff);
}
inline void put32(std::vector<std::byte>& frame, size_t offset, uint32_t value) {
  put16(frame, offset, static_cast<uint16_t>(value >> 16));
  put16(frame, offset + 2, static_cast<uint16_t>(value));
}
inline uint16_t get16(const std::vector<std::byte>& frame, size_t offset) {
  return static_cast<uint16_t>((static_cast<unsigned>(frame[offset]) << 8) |
                               static_cast<unsigned>(frame[offset + 1]));
}
inline uint32_t get32(const std::vector<std::byte>& frame, size_t offset) {
  return (uint32_t{get16(frame, offset)} << 16) | get16(frame, offset + 2);
}
inline void put_mac(std::vector<std::byte>& frame, size_t offset, const MacAddress& address) {
  std::memcpy(frame.data() + offset, address.bytes().data(), 6);
}
inline MacAddress get_mac(const std::vector<std::byte>& frame, size_t offset) {
  return MacAddress::from_bytes(std::span<const std::byte, 6>(frame.data() + offset, 6));
}

// RFC 1071 Internet checksum.
inline uint16_t internet_checksum(const std::vector<std::byte>& frame, size_t offset, size_t length) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < length; i += 2) sum += get16(frame, offset + i);
  if (length % 2 != 0) sum += static_cast<uint32_t>(frame[offset + length - 1]) << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

// RFC 826 ARP for IPv4 over Ethernet.
inline std::vector<std::byte> arp(uint16_t operation, const MacAddress& sender_mac, uint32_t sender_ip,
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
inline std::vector<std::byte> echo_request(const MacAddress& destination, uint16_t sequence) {
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

}  // namespace lamina::net::testing
