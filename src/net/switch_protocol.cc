#include "net/switch_protocol.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

namespace lamina::net {

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxLabelSize = 128;

Result<Json> parse_json(std::string_view text, std::string_view what) {
  Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return fail(ErrorCode::kCorrupt, fmt::format("the switch sent a malformed {}", what));
  }
  return json;
}

}  // namespace

std::string encode_hello(const SwitchHello& hello) {
  Json json{{"lamina_switch", kSwitchProtocolVersion},
            {"role", hello.role == SwitchRole::kPort ? "port" : "query"},
            {"label", hello.label}};
  if (hello.role == SwitchRole::kPort) {
    json["mac"] = hello.mac.to_string();
    json["mac_spoofing"] = hello.mac_spoofing;
  }
  return json.dump();
}

Result<SwitchHello> decode_hello(std::string_view text) {
  auto json = parse_json(text, "hello");
  if (!json) return fail(json.error());
  auto version = json->find("lamina_switch");
  if (version == json->end() || !version->is_number_integer() ||
      version->get<int64_t>() != kSwitchProtocolVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("unsupported switch protocol (this switch speaks version {}; stop "
                            "the switch or its VMs and start them with one lamina version)",
                            kSwitchProtocolVersion));
  }
  SwitchHello hello;
  auto role = json->find("role");
  if (role == json->end() || !role->is_string()) {
    return fail(ErrorCode::kInvalidArgument, "hello without a role");
  }
  if (*role == "port") {
    hello.role = SwitchRole::kPort;
  } else if (*role == "query") {
    hello.role = SwitchRole::kQuery;
  } else {
    return fail(ErrorCode::kInvalidArgument, "hello with an unknown role");
  }
  auto label = json->find("label");
  if (label != json->end() && label->is_string()) {
    hello.label = label->get<std::string>().substr(0, kMaxLabelSize);
  }
  if (hello.role == SwitchRole::kPort) {
    auto mac = json->find("mac");
    Result<MacAddress> address = fail(ErrorCode::kInvalidArgument, "no MAC");
    if (mac != json->end() && mac->is_string())
      address = MacAddress::parse(mac->get<std::string>());
    if (!address || address->is_group() || address->is_zero()) {
      return fail(ErrorCode::kInvalidArgument,
                  "a port hello needs the card's unicast MAC address (\"mac\")");
    }
    hello.mac = *address;
    auto spoofing = json->find("mac_spoofing");
    if (spoofing != json->end()) {
      if (!spoofing->is_boolean()) {
        return fail(ErrorCode::kInvalidArgument, "\"mac_spoofing\" must be true or false");
      }
      hello.mac_spoofing = spoofing->get<bool>();
    }
  }
  return hello;
}

std::string encode_welcome(uint32_t port) {
  return Json{{"lamina_switch", kSwitchProtocolVersion}, {"port", port}}.dump();
}

std::string encode_refusal(std::string_view why) {
  return Json{{"lamina_switch", kSwitchProtocolVersion}, {"error", std::string(why)}}.dump();
}

Result<uint32_t> decode_welcome(std::string_view text) {
  auto json = parse_json(text, "welcome");
  if (!json) return fail(json.error());
  if (auto error = json->find("error"); error != json->end() && error->is_string()) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("the switch refused the port: {}", error->get<std::string>()));
  }
  auto port = json->find("port");
  if (port == json->end() || !port->is_number_unsigned() || port->get<uint64_t>() > UINT32_MAX) {
    return fail(ErrorCode::kCorrupt, "the switch sent a welcome without a port number");
  }
  return port->get<uint32_t>();
}

nlohmann::json status_json(const SwitchStatus& status) {
  Json ports = Json::array();
  for (const auto& port : status.ports) {
    ports.push_back({{"id", port.id},
                     {"label", port.label},
                     {"pid", port.pid},
                     {"connected_seconds", port.connected_seconds},
                     {"received_frames", port.received_frames},
                     {"received_bytes", port.received_bytes},
                     {"sent_frames", port.sent_frames},
                     {"sent_bytes", port.sent_bytes},
                     {"malformed_frames", port.malformed_frames},
                     {"dropped_frames", port.dropped_frames},
                     {"mac", port.mac},
                     {"mac_spoofing", port.mac_spoofing},
                     {"spoofed_frames", port.spoofed_frames},
                     {"unlearned_sources", port.unlearned_sources}});
  }
  Json macs = Json::array();
  for (const auto& mac : status.macs) {
    macs.push_back(
        {{"address", mac.address}, {"port", mac.port}, {"age_seconds", mac.age_seconds}});
  }
  Json json{{"name", status.name},
            {"pid", status.pid},
            {"uptime_seconds", status.uptime_seconds},
            {"mac_age_seconds", status.mac_age_seconds},
            {"max_macs", status.max_macs},
            {"max_ports", status.max_ports},
            {"max_macs_per_port", status.max_macs_per_port},
            {"flooded_frames", status.flooded_frames},
            {"filtered_frames", status.filtered_frames},
            {"unlearned_sources", status.unlearned_sources},
            {"ports", std::move(ports)},
            {"macs", std::move(macs)}};
  return json;
}

std::string encode_status(const SwitchStatus& status) { return status_json(status).dump(); }

Result<SwitchStatus> decode_status(std::string_view text) {
  auto json = parse_json(text, "status");
  if (!json) return fail(json.error());
  // The daemon is the same user's program; a field of the wrong type still must not throw.
  try {
    SwitchStatus status;
    status.name = json->value("name", "");
    status.pid = json->value("pid", 0);
    status.uptime_seconds = json->value("uptime_seconds", 0.0);
    status.mac_age_seconds = json->value("mac_age_seconds", 0.0);
    status.max_macs = json->value("max_macs", uint64_t{0});
    status.max_ports = json->value("max_ports", uint64_t{0});
    status.max_macs_per_port = json->value("max_macs_per_port", uint64_t{0});
    status.flooded_frames = json->value("flooded_frames", uint64_t{0});
    status.filtered_frames = json->value("filtered_frames", uint64_t{0});
    status.unlearned_sources = json->value("unlearned_sources", uint64_t{0});
    for (const auto& item : json->value("ports", Json::array())) {
      SwitchPortStatus port;
      port.id = item.value("id", 0U);
      port.label = item.value("label", "");
      port.pid = item.value("pid", 0);
      port.connected_seconds = item.value("connected_seconds", 0.0);
      port.received_frames = item.value("received_frames", uint64_t{0});
      port.received_bytes = item.value("received_bytes", uint64_t{0});
      port.sent_frames = item.value("sent_frames", uint64_t{0});
      port.sent_bytes = item.value("sent_bytes", uint64_t{0});
      port.malformed_frames = item.value("malformed_frames", uint64_t{0});
      port.dropped_frames = item.value("dropped_frames", uint64_t{0});
      port.mac = item.value("mac", "");
      port.mac_spoofing = item.value("mac_spoofing", false);
      port.spoofed_frames = item.value("spoofed_frames", uint64_t{0});
      port.unlearned_sources = item.value("unlearned_sources", uint64_t{0});
      status.ports.push_back(std::move(port));
    }
    for (const auto& item : json->value("macs", Json::array())) {
      status.macs.push_back(
          {item.value("address", ""), item.value("port", 0U), item.value("age_seconds", 0.0)});
    }
    return status;
  } catch (const Json::exception& error) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("the switch sent a malformed status: {}", error.what()));
  }
}

}  // namespace lamina::net
