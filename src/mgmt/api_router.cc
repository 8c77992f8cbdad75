#include "mgmt/api_router.h"
#include "base/json_text.h"

#include <charconv>
#include <functional>

#include <fmt/format.h>

#include "mgmt/openapi_document.h"
#include "mgmt/resource_service.h"

namespace lamina::mgmt {
namespace {

using Parameters = std::map<std::string, std::string>;

// The console: a WebSocket (HttpServer) or, without an upgrade, the recent output as text.
constexpr std::string_view kConsolePath = "/v1/vms/{name}/console";
// The VM's VNC server relayed over a WebSocket (HttpServer, VncRelay).
constexpr std::string_view kVncPath = "/v1/vms/{name}/vnc";
constexpr std::string_view kScreenshotPath = "/v1/vms/{name}/screenshot";
// Events as they happen: Server-Sent Events on a response that stays open (HttpServer).
constexpr std::string_view kEventStreamPath = "/v1/events/stream";
// Another laminad's live migration into this one: a WebSocket (HttpServer, IncomingMigration).
constexpr std::string_view kIncomingMigrationPath = "/v1/migrations/incoming";

struct Call {
  const ApiRequest& request;
  Parameters path;  // {name} values
  Parameters query;
  nlohmann::json body;
};

using Handler = std::function<ServiceResult<nlohmann::json>(VmService&, const Call&)>;

struct Route {
  std::string_view method;
  std::string_view path;
  bool wants_body;
  Handler handler;
};

ApiResponse json_response(int status, const nlohmann::json& body) {
  return {status, "application/json", json_text(body, 2) + "\n"};
}

ApiResponse error_response(const ServiceError& error) {
  return json_response(
      error.status,
      {{"error", {{"status", error.status}, {"field", error.field}, {"message", error.message}}}});
}

ServiceResult<bool> query_flag(const Call& call, const std::string& name) {
  auto found = call.query.find(name);
  if (found == call.query.end()) return false;
  if (found->second == "true" || found->second == "1" || found->second.empty()) return true;
  if (found->second == "false" || found->second == "0") return false;
  return std::unexpected(ServiceError{400, name, "must be true or false"});
}

// A whole number from 0 to max given as `name` (a query parameter or a header).
ServiceResult<int64_t> whole_number(const std::string& name, std::string_view text, int64_t max) {
  int64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < 0 || value > max) {
    return std::unexpected(
        ServiceError{400, name, fmt::format("must be a whole number from 0 to {}", max)});
  }
  return value;
}

ServiceResult<int64_t> query_number(const Call& call, const std::string& name, int64_t fallback,
                                    int64_t max) {
  auto found = call.query.find(name);
  if (found == call.query.end()) return fallback;
  return whole_number(name, found->second, max);
}

ServiceResult<StopOptions> stop_options(const Call& call) {
  StopOptions options;
  if (call.body.is_null()) return options;
  if (!call.body.is_object()) {
    return std::unexpected(ServiceError{400, "", "the body must be a JSON object"});
  }
  for (const auto& [key, value] : call.body.items()) {
    if (key == "force") {
      if (!value.is_boolean())
        return std::unexpected(ServiceError{400, key, "must be true or false"});
      options.force = value.get<bool>();
    } else if (key == "timeout") {
      if (!value.is_number() || value.get<double>() < 0 || value.get<double>() > 3600) {
        return std::unexpected(ServiceError{400, key, "must be seconds from 0 to 3600"});
      }
      options.timeout = std::chrono::milliseconds(static_cast<int64_t>(value.get<double>() * 1000));
    } else {
      return std::unexpected(ServiceError{400, key, "unknown field"});
    }
  }
  return options;
}

const std::vector<Route>& route_table() {
  static const std::vector<Route> table = {
      {"GET", "/v1/vms", false, [](VmService& s, const Call&) { return s.list(); }},
      {"POST", "/v1/vms", true, [](VmService& s, const Call& c) { return s.create(c.body); }},
      {"GET", "/v1/vms/{name}", false,
       [](VmService& s, const Call& c) { return s.get(c.path.at("name")); }},
      {"PATCH", "/v1/vms/{name}", true,
       [](VmService& s, const Call& c) { return s.update(c.path.at("name"), c.body); }},
      {"DELETE", "/v1/vms/{name}", false,
       [](VmService& s, const Call& c) -> ServiceResult<nlohmann::json> {
         auto with_disks = query_flag(c, "with_disks");
         if (!with_disks) return std::unexpected(with_disks.error());
         return s.remove(c.path.at("name"), *with_disks);
       }},
      {"POST", "/v1/vms/{name}/start", false,
       [](VmService& s, const Call& c) { return s.start(c.path.at("name")); }},
      {"POST", "/v1/vms/{name}/stop", true,
       [](VmService& s, const Call& c) -> ServiceResult<nlohmann::json> {
         auto options = stop_options(c);
         if (!options) return std::unexpected(options.error());
         return s.stop(c.path.at("name"), *options);
       }},
      {"POST", "/v1/vms/{name}/kill", false,
       [](VmService& s, const Call& c) { return s.kill(c.path.at("name")); }},
      {"POST", "/v1/vms/{name}/pause", false,
       [](VmService& s, const Call& c) { return s.control(c.path.at("name"), "pause"); }},
      {"POST", "/v1/vms/{name}/resume", false,
       [](VmService& s, const Call& c) { return s.control(c.path.at("name"), "resume"); }},
      {"POST", "/v1/vms/{name}/reset", false,
       [](VmService& s, const Call& c) { return s.control(c.path.at("name"), "reset"); }},
      {"POST", "/v1/vms/{name}/resize", true,
       [](VmService& s, const Call& c) { return s.resize(c.path.at("name"), c.body); }},
      {"POST", "/v1/vms/{name}/devices", true,
       [](VmService& s, const Call& c) { return s.attach(c.path.at("name"), c.body); }},
      {"DELETE", "/v1/vms/{name}/devices/{device}", false,
       [](VmService& s, const Call& c) -> ServiceResult<nlohmann::json> {
         auto timeout = query_number(c, "timeout", 10, 120);
         if (!timeout) return std::unexpected(timeout.error());
         return s.detach(c.path.at("name"), c.path.at("device"),
                         std::chrono::seconds(std::max<int64_t>(*timeout, 1)));
       }},
      {"GET", "/v1/vms/{name}/checkpoints", false,
       [](VmService& s, const Call& c) { return s.checkpoints(c.path.at("name")); }},
      {"POST", "/v1/vms/{name}/checkpoints", true,
       [](VmService& s, const Call& c) {
         return s.checkpoint(c.path.at("name"),
                             c.body.is_null() ? nlohmann::json::object() : c.body);
       }},
      {"DELETE", "/v1/vms/{name}/checkpoints/{checkpoint}", false,
       [](VmService& s, const Call& c) {
         return s.delete_checkpoint(c.path.at("name"), c.path.at("checkpoint"));
       }},
      {"POST", "/v1/vms/{name}/checkpoints/{checkpoint}/restore", false,
       [](VmService& s, const Call& c) {
         return s.restore(c.path.at("name"), c.path.at("checkpoint"));
       }},
      {"POST", "/v1/vms/{name}/migrate", true,
       [](VmService& s, const Call& c) {
         return s.migrate(c.path.at("name"), c.body.is_null() ? nlohmann::json::object() : c.body);
       }},
      {"GET", "/v1/events", false,
       [](VmService& s, const Call& c) -> ServiceResult<nlohmann::json> {
         auto after = query_number(c, "after", 0, INT64_MAX);
         if (!after) return std::unexpected(after.error());
         auto wait = query_number(c, "wait", 0, 60);
         if (!wait) return std::unexpected(wait.error());
         const auto vm = c.query.contains("vm") ? c.query.at("vm") : std::string();
         return s.events(*after, vm, std::chrono::seconds(*wait));
       }},
      {"GET", "/v1/disks/info", false,
       [](VmService&, const Call& c) -> ServiceResult<nlohmann::json> {
         auto force_share = query_flag(c, "force_share");
         if (!force_share) return std::unexpected(force_share.error());
         const auto path = c.query.contains("path") ? c.query.at("path") : std::string();
         return inspect_disk(path, *force_share);
       }},
      {"POST", "/v1/disks", true,
       [](VmService&, const Call& c) { return create_disk(c.body); }},
      {"GET", "/v1/switches", false, [](VmService&, const Call&) { return list_switches(); }},
      {"GET", "/v1/switches/{name}", false,
       [](VmService&, const Call& c) { return get_switch(c.path.at("name")); }},
      {"GET", "/v1/version", false,
       [](VmService&, const Call&) -> ServiceResult<nlohmann::json> {
         return nlohmann::json{{"api", "v1"}, {"server", "laminad"}};
       }},
  };
  return table;
}

// Matches "/v1/vms/web1/start" against "/v1/vms/{name}/start".
bool match(std::string_view pattern, std::string_view path, Parameters& parameters) {
  while (!pattern.empty() || !path.empty()) {
    if (pattern.empty() || path.empty() || pattern[0] != '/' || path[0] != '/') return false;
    pattern.remove_prefix(1);
    path.remove_prefix(1);
    const size_t pattern_end = std::min(pattern.find('/'), pattern.size());
    const size_t path_end = std::min(path.find('/'), path.size());
    const std::string_view want = pattern.substr(0, pattern_end);
    const std::string_view got = path.substr(0, path_end);
    if (want.starts_with('{') && want.ends_with('}')) {
      if (got.empty()) return false;
      parameters[std::string(want.substr(1, want.size() - 2))] = std::string(got);
    } else if (want != got) {
      return false;
    }
    pattern.remove_prefix(pattern_end);
    path.remove_prefix(path_end);
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
        hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i] == '+' ? ' ' : text[i];
    }
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> parse_query(std::string_view query) {
  std::map<std::string, std::string> values;
  while (!query.empty()) {
    const size_t end = std::min(query.find('&'), query.size());
    const std::string_view pair = query.substr(0, end);
    const size_t equals = pair.find('=');
    if (!pair.empty()) {
      values[percent_decode(pair.substr(0, equals))] =
          equals == std::string_view::npos ? "" : percent_decode(pair.substr(equals + 1));
    }
    query.remove_prefix(std::min(end + 1, query.size()));
  }
  return values;
}

std::expected<ApiRouter::ConsoleRequest, ApiResponse> ApiRouter::open_console(
    const std::string& target) {
  const std::string_view view = target;
  const size_t question = view.find('?');
  Parameters parameters;
  if (!match(kConsolePath, view.substr(0, question), parameters)) {
    return std::unexpected(error_response({404, "", "no such resource"}));
  }
  Parameters query;
  if (question != std::string_view::npos) query = parse_query(view.substr(question + 1));
  ConsoleRequest request;
  if (auto mode = query.find("mode"); mode != query.end()) {
    if (mode->second != "rw" && mode->second != "ro") {
      return std::unexpected(error_response({400, "mode", "must be rw or ro"}));
    }
    request.write = mode->second == "rw";
  }
  auto hub = service_.console(parameters.at("name"));
  if (!hub) return std::unexpected(error_response(hub.error()));
  request.hub = std::move(*hub);
  return request;
}

bool ApiRouter::is_vnc(std::string_view target) {
  Parameters parameters;
  return match(kVncPath, target.substr(0, target.find('?')), parameters);
}

std::expected<machine::DisplayOption, ApiResponse> ApiRouter::open_vnc(const std::string& target) {
  const std::string_view view = target;
  Parameters parameters;
  if (!match(kVncPath, view.substr(0, view.find('?')), parameters)) {
    return std::unexpected(error_response({404, "", "no such resource"}));
  }
  auto display = service_.vnc_display(parameters.at("name"));
  if (!display) return std::unexpected(error_response(display.error()));
  return *display;
}

bool ApiRouter::is_event_stream(std::string_view target) {
  return target.substr(0, target.find('?')) == kEventStreamPath;
}

std::expected<ApiRouter::EventStream, ApiResponse> ApiRouter::open_event_stream(
    const std::string& target, std::string_view last_event_id) {
  const std::string_view view = target;
  const size_t question = view.find('?');
  Parameters query;
  if (question != std::string_view::npos) query = parse_query(view.substr(question + 1));
  EventStream stream;
  if (auto given = query.find("after"); given != query.end()) {
    auto after = whole_number("after", given->second, INT64_MAX);
    if (!after) return std::unexpected(error_response(after.error()));
    stream.after = *after;
  }
  if (!last_event_id.empty()) {
    // A reconnecting SSE client says where it stopped.
    auto resumed = whole_number("Last-Event-ID", last_event_id, INT64_MAX);
    if (!resumed) return std::unexpected(error_response(resumed.error()));
    stream.after = std::max(stream.after, *resumed);
  }
  if (auto vm = query.find("vm"); vm != query.end()) stream.vm = vm->second;
  return stream;
}

ServiceResult<nlohmann::json> ApiRouter::next_events(EventStream& stream,
                                                     std::chrono::milliseconds wait) {
  auto batch = service_.events(stream.after, stream.vm, wait);
  if (!batch) return batch;
  for (const auto& event : (*batch)["events"]) {
    stream.after = std::max(stream.after, event["id"].get<int64_t>());
  }
  return (*batch)["events"];
}

std::vector<RouteInfo> ApiRouter::routes() {
  std::vector<RouteInfo> list;
  for (const Route& route : route_table()) list.push_back({route.method, route.path});
  list.push_back({"GET", kConsolePath});
  list.push_back({"GET", kVncPath});
  list.push_back({"GET", kScreenshotPath});
  list.push_back({"GET", kEventStreamPath});
  list.push_back({"GET", kIncomingMigrationPath});
  list.push_back({"GET", "/openapi.json"});
  list.push_back({"GET", "/metrics"});
  return list;
}

bool ApiRouter::is_incoming_migration(std::string_view target) {
  return target == kIncomingMigrationPath;
}

std::string_view ApiRouter::openapi_document() { return kOpenApiDocument; }

ApiResponse ApiRouter::handle(const ApiRequest& request) {
  const std::string_view target = request.target;
  const size_t question = target.find('?');
  const std::string_view path = target.substr(0, question);
  if (request.method == "GET" && path == "/openapi.json") {
    return {200, "application/json", std::string(kOpenApiDocument)};
  }
  if (request.method == "GET" && path == "/metrics") {
    return {200, "text/plain; version=0.0.4", service_.metrics()};
  }
  if (path == kIncomingMigrationPath) {
    return error_response({426, "", "this is where another laminad sends a live migration (a "
                                    "WebSocket); use `lamina vm migrate` on the source"});
  }
  if (path == kEventStreamPath) {
    // HttpServer serves it as a stream (open_event_stream); nothing else can.
    return error_response({406, "", "a text/event-stream: read it with an SSE client (curl -N)"});
  }
  if (Parameters parameters; match(kConsolePath, path, parameters)) {
    if (request.method != "GET") return error_response({405, "", "use GET (or a WebSocket)"});
    auto hub = service_.console(parameters.at("name"));
    if (!hub) return error_response(hub.error());
    return {200, "text/plain; charset=utf-8", (*hub)->backlog()};
  }
  if (Parameters parameters; match(kVncPath, path, parameters)) {
    // The relay itself is a WebSocket (HttpServer); a plain GET says whether one would open.
    if (request.method != "GET") return error_response({405, "", "use GET (or a WebSocket)"});
    auto display = service_.vnc_display(parameters.at("name"));
    if (!display) return error_response(display.error());
    return {200, "application/json",
            json_text(nlohmann::json{{"vnc", machine::describe(*display)},
                                     {"relay", "open this resource as a WebSocket (binary "
                                               "messages carry RFB both ways)"}}) +
                "\n"};
  }
  if (Parameters parameters; match(kScreenshotPath, path, parameters)) {
    if (request.method != "GET") return error_response({405, "", "use GET"});
    auto png = service_.screenshot(parameters.at("name"));
    if (!png) return error_response(png.error());
    return {200, "image/png", std::move(*png)};
  }
  bool path_known = false;
  for (const Route& route : route_table()) {
    Parameters parameters;
    if (!match(route.path, path, parameters)) continue;
    path_known = true;
    if (route.method != request.method) continue;
    Call call{request, std::move(parameters), {}, nullptr};
    if (question != std::string_view::npos) call.query = parse_query(target.substr(question + 1));
    if (!request.body.empty()) {
      if (!route.wants_body) {
        return error_response({400, "", "this request takes no body"});
      }
      if (request.body.size() > kMaxBodyBytes) {
        return error_response({413, "", "the body is too large"});
      }
      call.body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
      if (call.body.is_discarded()) {
        return error_response({400, "", "the body is not valid JSON"});
      }
    } else if (route.wants_body && request.method != "POST") {
      return error_response({400, "", "this request needs a JSON body"});
    }
    if (route.wants_body && request.method == "POST" &&
        (route.path == "/v1/vms" || route.path == "/v1/disks") && call.body.is_null()) {
      return error_response({400, "", "this request needs a JSON body"});
    }
    auto result = route.handler(service_, call);
    if (!result) return error_response(result.error());
    const bool creates =
        request.method == "POST" && (route.path == "/v1/vms" || route.path == "/v1/disks" ||
                                     route.path == "/v1/vms/{name}/checkpoints");
    // A migration runs on after the answer: 202 Accepted.
    const bool accepted = request.method == "POST" && route.path == "/v1/vms/{name}/migrate";
    return json_response(creates ? 201 : accepted ? 202 : 200, *result);
  }
  if (path_known)
    return error_response({405, "", fmt::format("{} is not allowed here", request.method)});
  return error_response({404, "", fmt::format("no such resource: {}", path)});
}

}  // namespace lamina::mgmt
