#pragma once
// The virtual switch's control protocol on NAME.sock (SOCK_SEQPACKET, one message per
// datagram). A client opens a connection and sends one hello:
//   {"lamina_switch": 2, "role": "port", "label": "...", "mac": "52:54:00:12:34:56",
//    "mac_spoofing": false}                                → {"lamina_switch": 2, "port": ID}
//        then every datagram either way is one Ethernet frame (frame_port.h), until close;
//        "mac" is the card's own unicast address: without "mac_spoofing" the switch drops
//        every frame from the port whose source is another address;
//   {"lamina_switch": 2, "role": "query"}                  → the SwitchStatus as JSON text,
//        split into datagrams of at most kQueryChunkSize bytes, then the daemon closes.
// A refused hello gets {"error": "why"} and a close. The version is exact: version 1 (no MAC in
// the port hello) is refused, so an old client cannot bypass the source check. Also the status
// the query returns, which `lamina switch show` prints. Plain data, thread-safe as values.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "net/mac_address.h"

namespace lamina::net {

inline constexpr int kSwitchProtocolVersion = 2;
inline constexpr size_t kQueryChunkSize = 16384;
// Largest hello a daemon reads; a longer one is refused.
inline constexpr size_t kMaxHelloSize = 4096;

enum class SwitchRole { kPort, kQuery };

struct SwitchHello {
  SwitchRole role = SwitchRole::kPort;
  std::string label;          // shown by `lamina switch show`; at most 128 bytes are kept
  MacAddress mac;             // kPort: the card's own address (unicast, not zero)
  bool mac_spoofing = false;  // kPort: frames from other source addresses pass too
};

std::string encode_hello(const SwitchHello& hello);
[[nodiscard]] Result<SwitchHello> decode_hello(std::string_view text);
std::string encode_welcome(uint32_t port);
std::string encode_refusal(std::string_view why);
// The port id of a welcome, or the daemon's refusal as kInvalidArgument.
[[nodiscard]] Result<uint32_t> decode_welcome(std::string_view text);

// One port as the switch sees it: "received" is what the switch got from the port (the VM's
// transmissions), "sent" what it delivered to the port.
struct SwitchPortStatus {
  uint32_t id = 0;
  std::string label;
  int32_t pid = 0;  // the connected process (SO_PEERCRED)
  double connected_seconds = 0;
  uint64_t received_frames = 0;
  uint64_t received_bytes = 0;
  uint64_t sent_frames = 0;
  uint64_t sent_bytes = 0;
  // Frames from the port that were refused: shorter than 14 bytes, too long, or with a group
  // (multicast) source address.
  uint64_t malformed_frames = 0;
  // Frames for the port that could not be queued (its socket buffer was full: the VM is not
  // keeping up) or arrived as it was closing.
  uint64_t dropped_frames = 0;
  std::string mac;  // the card's own address, from the hello
  bool mac_spoofing = false;
  // Frames from the port with a source address other than `mac`, dropped (spoofing off).
  uint64_t spoofed_frames = 0;
  // Source addresses from the port not learned because it holds max_macs_per_port entries.
  uint64_t unlearned_sources = 0;
};

struct SwitchMacStatus {
  std::string address;
  uint32_t port = 0;
  double age_seconds = 0;
};

struct SwitchStatus {
  std::string name;
  int32_t pid = 0;  // the daemon
  double uptime_seconds = 0;
  double mac_age_seconds = 0;
  uint64_t max_macs = 0;
  uint64_t max_ports = 0;
  uint64_t max_macs_per_port = 0;
  // Switch-wide counters: frames flooded (group or unknown destination), filtered (destined to
  // the port they came from), and sources not learned because the table (or the port's share
  // of it) was full.
  uint64_t flooded_frames = 0;
  uint64_t filtered_frames = 0;
  uint64_t unlearned_sources = 0;
  std::vector<SwitchPortStatus> ports;
  std::vector<SwitchMacStatus> macs;
};

// The status as JSON (the documented shape `lamina switch show --json` and laminad's
// GET /v1/switches print), and as the text the daemon sends.
nlohmann::json status_json(const SwitchStatus& status);
std::string encode_status(const SwitchStatus& status);
[[nodiscard]] Result<SwitchStatus> decode_status(std::string_view text);

}  // namespace lamina::net
