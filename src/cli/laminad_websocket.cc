#include "cli/laminad_websocket.h"

namespace lamina::cli {

Result<void> check_websocket_resource(const std::string& connect, const std::string& path) {
  auto client = ApiClient::connect(connect);
  if (!client) return fail(client.error());
  auto reply = (*client)->call("GET", path);
  if (!reply) return fail(reply.error());
  if (reply->status == 200) return {};
  const auto& body = reply->body;
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    return fail(reply->status == 404 ? ErrorCode::kNotFound : ErrorCode::kInvalidArgument,
                body["error"].value("message", fmt::format("HTTP {}", reply->status)));
  }
  return fail(ErrorCode::kIo, fmt::format("laminad answered HTTP {}", reply->status));
}

}  // namespace lamina::cli
