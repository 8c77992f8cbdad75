#pragma once
// ApiRouter: laminad's REST API as a table of routes (method + path template) over VmService,
// independent of the HTTP library: a request in, a response out. The routes are the API's
// contract, listed by routes() so a test checks them against the OpenAPI document
// (src/mgmt/openapi.json, served at GET /openapi.json) both ways.
//
// Bad input gets 4xx with {"error": {"status": S, "field": F, "message": M}}; bodies are JSON
// objects of at most kMaxBodyBytes.
//
// Ownership: borrows the service. Thread-safety: handle() from any connection thread.

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "mgmt/vm_service.h"

namespace lamina::mgmt {

struct ApiRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // path and query, e.g. "/v1/events?after=3"
  std::string body;
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

struct RouteInfo {
  std::string_view method;
  std::string_view path;  // with {name}-style parameters, as in the OpenAPI document
};

class ApiRouter {
 public:
  static constexpr size_t kMaxBodyBytes = 1 << 20;

  explicit ApiRouter(VmService& service) : service_(service) {}
  ApiResponse handle(const ApiRequest& request);

  // A console WebSocket's target ("/v1/vms/NAME/console?mode=rw|ro"): the VM's console hub
  // and whether the client asks to write; the error as a response otherwise.
  struct ConsoleRequest {
    std::shared_ptr<ConsoleHub> hub;
    bool write = true;
  };
  std::expected<ConsoleRequest, ApiResponse> open_console(const std::string& target);

  // The event stream ("/v1/events/stream?after=N&vm=NAME", or after the Last-Event-ID header
  // of a reconnecting client): where it stands; next_events() waits up to `wait` for the next
  // batch (empty when nothing happened) and moves it on.
  struct EventStream {
    int64_t after = 0;
    std::string vm;
  };
  static bool is_event_stream(std::string_view target);
  std::expected<EventStream, ApiResponse> open_event_stream(const std::string& target,
                                                            std::string_view last_event_id);
  ServiceResult<nlohmann::json> next_events(EventStream& stream, std::chrono::milliseconds wait);

  // A VNC relay's target ("/v1/vms/NAME/vnc" with a WebSocket upgrade): where the running
  // VM's VNC server listens, which HttpServer connects to and relays; the error as a response
  // otherwise (no such VM, not running, no VNC display).
  static bool is_vnc(std::string_view target);
  std::expected<machine::DisplayOption, ApiResponse> open_vnc(const std::string& target);

  // An incoming live migration's target (a WebSocket HttpServer hands to IncomingMigration,
  // with the service).
  static bool is_incoming_migration(std::string_view target);
  // The service, for the connections a route does not answer (an incoming migration).
  VmService& service() { return service_; }

  static std::vector<RouteInfo> routes();
  static std::string_view openapi_document();

 private:
  VmService& service_;
};

// Splits "a=1&b=two" (percent-decoded).
std::map<std::string, std::string> parse_query(std::string_view query);

}  // namespace lamina::mgmt
