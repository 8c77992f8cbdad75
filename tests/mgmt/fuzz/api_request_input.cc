#include "api_request_input.h"

#include <array>

#include <fmt/format.h>

namespace lamina::mgmt {
namespace {

constexpr std::array<const char*, 6> kMethods = {"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD"};
// Targets with a hole for a name (or query value) taken from the input.
constexpr std::array<const char*, 12> kTargets = {"/v1/vms",
                                                  "/v1/vms/{}",
                                                  "/v1/vms/{}/start",
                                                  "/v1/vms/{}/stop",
                                                  "/v1/vms/{}/pause",
                                                  "/v1/vms/{}/console",
                                                  "/v1/vms/{}?with_disks={}",
                                                  "/v1/events?after={}",
                                                  "/v1/events?vm={}&wait=0",
                                                  "/metrics",
                                                  "/openapi.json",
                                                  "/{}"};

// Reads length-prefixed pieces from the input.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> input) : input_(input) {}
  bool empty() const { return input_.empty(); }
  uint8_t byte() {
    if (input_.empty()) return 0;
    const uint8_t value = input_[0];
    input_ = input_.subspan(1);
    return value;
  }
  std::string piece(size_t max) {
    const size_t length = std::min<size_t>({byte(), max, input_.size()});
    std::string text(reinterpret_cast<const char*>(input_.data()), length);
    input_ = input_.subspan(length);
    return text;
  }

 private:
  std::span<const uint8_t> input_;
};

}  // namespace

ApiFuzzHarness::ApiFuzzHarness(const std::filesystem::path& scratch) : scratch_(scratch) {
  std::filesystem::remove_all(scratch_);
  auto service = VmService::open({.state_dir = scratch_,
                                  .worker_program = "/nonexistent/lamina-vm",
                                  .lamina_program = "/nonexistent/lamina"});
  if (service) {
    service_ = std::move(*service);
    router_ = std::make_unique<ApiRouter>(*service_);
  }
}

ApiFuzzHarness::~ApiFuzzHarness() {
  router_.reset();
  service_.reset();
  std::error_code ignored;
  std::filesystem::remove_all(scratch_, ignored);
}

std::string ApiFuzzHarness::run(std::span<const uint8_t> input) {
  if (!router_) return "the service did not open";
  Reader reader(input);
  for (int request = 0; request < 8 && !reader.empty(); ++request) {
    const std::string method = kMethods[reader.byte() % kMethods.size()];
    const std::string pattern = kTargets[reader.byte() % kTargets.size()];
    const std::string hole = reader.piece(80);
    std::string target = pattern;
    for (size_t at; (at = target.find("{}")) != std::string::npos;) target.replace(at, 2, hole);
    const std::string body = reader.piece(255);
    // Creating disks writes files where the body says: not for generated requests.
    if (target.starts_with("/v1/disks") || target.starts_with("//v1/disks")) continue;
    const ApiResponse response = router_->handle({method, target, body});
    if (response.status < 200 || response.status > 599) {
      return fmt::format("{} {}: status {}", method, target, response.status);
    }
    if (response.content_type != "application/json") continue;
    const auto json = nlohmann::json::parse(response.body, nullptr, false);
    if (json.is_discarded()) return fmt::format("{} {}: the body is not JSON", method, target);
    if (response.status >= 400) {
      if (!json.contains("error") || !json["error"].is_object() ||
          !json["error"].contains("message") || !json["error"]["message"].is_string() ||
          json["error"].value("status", 0) != response.status) {
        return fmt::format("{} {}: malformed error {}", method, target, response.body);
      }
    }
  }
  // Whatever was created is whole: every listed VM can be read back.
  const ApiResponse list = router_->handle({"GET", "/v1/vms", ""});
  const auto vms = nlohmann::json::parse(list.body, nullptr, false);
  if (vms.is_discarded()) return "the VM list is not JSON";
  for (const auto& vm : vms["vms"]) {
    const std::string name = vm.value("name", "");
    if (!valid_vm_name(name)) return fmt::format("a VM with an invalid name exists: '{}'", name);
    if (router_->handle({"GET", "/v1/vms/" + name, ""}).status != 200) {
      return fmt::format("VM {} is listed but cannot be read", name);
    }
  }
  return {};
}

}  // namespace lamina::mgmt
