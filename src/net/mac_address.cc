#include "net/mac_address.h"

#include <fmt/format.h>
#include <sys/random.h>

namespace lamina::net {

namespace {
int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

MacAddress MacAddress::from_bytes(std::span<const std::byte, 6> bytes) {
  std::array<uint8_t, 6> value{};
  for (size_t i = 0; i < 6; ++i) value[i] = static_cast<uint8_t>(bytes[i]);
  return MacAddress(value);
}

Result<MacAddress> MacAddress::parse(std::string_view text) {
  auto invalid = [&] {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is not a MAC address (expected six hex pairs like "
                            "52:54:00:12:34:56)",
                            text));
  };
  // Six pairs and five separators.
  if (text.size() != 17) return invalid();
  std::array<uint8_t, 6> value{};
  for (size_t i = 0; i < 6; ++i) {
    int high = hex_digit(text[i * 3]);
    int low = hex_digit(text[i * 3 + 1]);
    if (high < 0 || low < 0) return invalid();
    if (i < 5 && text[i * 3 + 2] != ':' && text[i * 3 + 2] != '-') return invalid();
    value[i] = static_cast<uint8_t>(high * 16 + low);
  }
  return MacAddress(value);
}

MacAddress MacAddress::random() {
  std::array<uint8_t, 6> value{};
  size_t filled = 0;
  while (filled < value.size()) {
    ssize_t got = ::getrandom(value.data() + filled, value.size() - filled, 0);
    // getrandom(2) for 6 bytes only fails when interrupted; try again.
    if (got > 0) filled += static_cast<size_t>(got);
  }
  value[0] = static_cast<uint8_t>((value[0] & 0xfe) | 0x02);
  return MacAddress(value);
}

std::string MacAddress::to_string() const {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", bytes_[0], bytes_[1], bytes_[2],
                     bytes_[3], bytes_[4], bytes_[5]);
}

uint64_t MacAddress::to_integer() const {
  uint64_t value = 0;
  for (uint8_t byte : bytes_) value = (value << 8) | byte;
  return value;
}

}  // namespace lamina::net
