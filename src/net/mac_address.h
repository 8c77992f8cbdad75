#pragma once
// MacAddress: a 48-bit IEEE 802 MAC address as six bytes, with the text form "52:54:00:12:34:56".
// A value type; thread-safe as any value.

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "base/error.h"

namespace lamina::net {

class MacAddress {
 public:
  constexpr MacAddress() = default;
  constexpr explicit MacAddress(std::array<uint8_t, 6> bytes) : bytes_(bytes) {}

  // Reads six bytes (a frame's destination at offset 0, its source at offset 6).
  static MacAddress from_bytes(std::span<const std::byte, 6> bytes);
  // Parses "xx:xx:xx:xx:xx:xx" (hex, either case; '-' also accepted as separator).
  static Result<MacAddress> parse(std::string_view text);
  // A random locally administered unicast address (IEEE 802: bit 1 of the first byte set,
  // bit 0 clear), from getrandom(2).
  static MacAddress random();

  static constexpr MacAddress broadcast() {
    return MacAddress({0xff, 0xff, 0xff, 0xff, 0xff, 0xff});
  }

  const std::array<uint8_t, 6>& bytes() const { return bytes_; }
  // IEEE 802: the individual/group bit, the first bit on the wire (bit 0 of byte 0). Broadcast
  // is a group address too.
  bool is_group() const { return (bytes_[0] & 0x01) != 0; }
  bool is_broadcast() const { return *this == broadcast(); }
  bool is_zero() const { return *this == MacAddress(); }
  std::string to_string() const;
  // The address as one integer (for hashing).
  uint64_t to_integer() const;

  auto operator<=>(const MacAddress&) const = default;

 private:
  std::array<uint8_t, 6> bytes_{};
};

struct MacAddressHash {
  size_t operator()(const MacAddress& address) const { return address.to_integer(); }
};

}  // namespace lamina::net
