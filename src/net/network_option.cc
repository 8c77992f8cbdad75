#include "net/network_option.h"

#include <cstdlib>

#include <fmt/format.h>

#include "net/switch_paths.h"
#include "net/tap_port.h"

namespace lamina::net {

Result<NetworkOption> parse_network_option(std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is not a network: use switch:NAME or tap:IFNAME", text));
  }
  NetworkOption option;
  std::string_view kind = text.substr(0, colon);
  std::string_view rest = text.substr(colon + 1);
  if (kind == "switch") {
    option.backend = NetworkBackend::kSwitch;
  } else if (kind == "tap") {
    option.backend = NetworkBackend::kTap;
  } else {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is not a network backend: use switch:NAME or tap:IFNAME", kind));
  }
  auto comma = rest.find(',');
  option.name = std::string(rest.substr(0, comma));
  if (option.backend == NetworkBackend::kSwitch) {
    if (auto valid = validate_switch_name(option.name); !valid) return fail(valid.error());
  } else if (option.name.empty() || option.name.size() > 15) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("'{}' is not an interface name (1-15 characters)", option.name));
  }
  bool have_mac = false;
  while (comma != std::string_view::npos) {
    rest = rest.substr(comma + 1);
    comma = rest.find(',');
    std::string_view item = rest.substr(0, comma);
    if (item.starts_with("mac=")) {
      auto mac = MacAddress::parse(item.substr(4));
      if (!mac) return fail(mac.error());
      if (mac->is_group() || mac->is_zero()) {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("mac={}: a network card needs a unicast address (the low bit of "
                                "the first byte clear, not all zeros)",
                                item.substr(4)));
      }
      option.mac = *mac;
      have_mac = true;
    } else if (item.starts_with("mac-spoofing=")) {
      std::string_view value = item.substr(13);
      if (value != "on" && value != "off") {
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("'{}': mac-spoofing is on or off", item));
      }
      if (option.backend != NetworkBackend::kSwitch) {
        return fail(ErrorCode::kInvalidArgument,
                    "mac-spoofing= applies to switch: networks (a tap passes what the guest "
                    "sends to the host)");
      }
      option.mac_spoofing = value == "on";
    } else {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("'{}' is not a network setting (known: mac=, mac-spoofing=)", item));
    }
  }
  if (!have_mac) option.mac = MacAddress::random();
  return option;
}

std::string describe(const NetworkOption& option) {
  return fmt::format("{}:{}", option.backend == NetworkBackend::kTap ? "tap" : "switch",
                     option.name);
}

Result<std::unique_ptr<FramePort>> open_frame_port(const NetworkOption& option,
                                                   const SwitchConnectOptions& switch_options,
                                                   GrantedFiles* granted) {
  if (option.backend == NetworkBackend::kTap) {
    if (!granted) {
      auto tap = TapPort::open(option.name);
      if (!tap) return fail(tap.error());
      return std::unique_ptr<FramePort>(std::move(*tap));
    }
    auto obtained = granted->obtain("tap:" + option.name, FileAccess::kConnected,
                                    [&] { return TapPort::open_descriptor(option.name); });
    if (!obtained) return fail(obtained.error());
    return std::unique_ptr<FramePort>(TapPort::adopt(option.name, std::move(obtained->fd)));
  }
  // The switch enforces the card's address unless spoofing is on, so it must know both.
  SwitchConnectOptions options = switch_options;
  options.mac = option.mac;
  options.mac_spoofing = option.mac_spoofing;
  if (!granted) {
    auto port = connect_switch(option.name, options);
    if (!port) return fail(port.error());
    return std::unique_ptr<FramePort>(std::move(*port));
  }
  // One port per card: the MAC (distinct across a VM's cards) tells two cards on one switch
  // apart. The port id comes with the grant, for `lamina switch show`'s description.
  const std::string key = fmt::format("switch:{} mac={}", option.name, option.mac.to_string());
  uint32_t port_id = 0;
  auto obtained = granted->obtain(key, FileAccess::kConnected, [&]() -> Result<UniqueFd> {
    auto port = connect_switch(option.name, options);
    if (!port) return fail(port.error());
    port_id = (*port)->port_id();
    return (*port)->release_socket();
  });
  if (!obtained) return fail(obtained.error());
  auto id = granted->resolve(key + " port", [&]() -> Result<std::string> {
    return std::to_string(port_id);
  });
  if (!id) return fail(id.error());
  return std::unique_ptr<FramePort>(std::make_unique<SwitchPort>(
      option.name, static_cast<uint32_t>(std::strtoul(id->c_str(), nullptr, 10)),
      std::move(obtained->fd)));
}

}  // namespace lamina::net
