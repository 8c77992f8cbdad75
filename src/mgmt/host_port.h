#pragma once
// "HOST:PORT" as laminad's --listen and a migration's destination take it: a host name or IPv4
// address, or an IPv6 address in brackets, then a decimal port. Thread-safety: a pure function.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace lamina::mgmt {

// The host (brackets removed) and the port (0-65535), or nothing when `text` is not that shape.
std::optional<std::pair<std::string, uint16_t>> parse_host_port(std::string_view text);

}  // namespace lamina::mgmt
