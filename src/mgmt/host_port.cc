#include "mgmt/host_port.h"

#include <charconv>

namespace lamina::mgmt {

std::optional<std::pair<std::string, uint16_t>> parse_host_port(std::string_view text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  std::string_view host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string_view digits = text.substr(colon + 1);
  if (host.empty() || digits.empty() || digits.size() > 5) return std::nullopt;
  unsigned port = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (error != std::errc() || end != digits.data() + digits.size() || port > 65535) return std::nullopt;
  return std::pair{std::string(host), static_cast<uint16_t>(port)};
}

}  // namespace lamina::mgmt
