#include "cli/api_client.h"
#include "base/json_text.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace lamina::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

std::string default_laminad_socket() {
  if (::geteuid() == 0) return "/run/lamina/laminad.sock";
  if (auto runtime = environment("XDG_RUNTIME_DIR"); !runtime.empty()) {
    return runtime + "/lamina/laminad.sock";
  }
  if (auto state = environment("XDG_STATE_HOME"); !state.empty()) {
    return state + "/lamina/laminad.sock";
  }
  return environment("HOME") + "/.local/state/lamina/laminad.sock";
}

struct ApiClient::Connection {
  asio::io_context io;
  Local::socket socket{io};
  beast::flat_buffer buffer;
};

ApiClient::ApiClient(std::unique_ptr<Connection> connection) : connection_(std::move(connection)) {}
ApiClient::~ApiClient() = default;

Result<std::string> console_socket_path(const std::string& given) {
  const std::string address = given.empty() ? environment("LAMINA_CONNECT") : given;
  if (address.empty()) return default_laminad_socket();
  if (address.starts_with("unix:")) return address.substr(5);
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--connect {}: use unix:PATH (HTTPS is not built yet)", address));
}

Result<std::unique_ptr<ApiClient>> ApiClient::connect(const std::string& given) {
  auto socket_path = console_socket_path(given);
  if (!socket_path) return fail(socket_path.error());
  const std::string& path = *socket_path;
  auto connection = std::make_unique<Connection>();
  beast::error_code error;
  connection->socket.connect(Local::endpoint(path), error);
  if (error) {
    return fail(ErrorCode::kNotFound,
                fmt::format("cannot reach laminad at {}: {} (start it with `laminad`, or say "
                            "where it listens with --connect unix:PATH)",
                            path, error.message()));
  }
  return std::unique_ptr<ApiClient>(new ApiClient(std::move(connection)));
}

Result<ApiReply> ApiClient::call(const std::string& method, const std::string& target,
                                 const nlohmann::json& body) {
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  request.set(http::field::host, "laminad");
  request.set(http::field::user_agent, "lamina");
  request.keep_alive(true);
  if (!body.is_null()) {
    request.set(http::field::content_type, "application/json");
    request.body() = json_text(body);
  }
  request.prepare_payload();
  beast::error_code error;
  http::write(connection_->socket, request, error);
  if (error) return fail(ErrorCode::kIo, fmt::format("laminad: {}", error.message()));
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(connection_->socket, connection_->buffer, parser, error);
  if (error) return fail(ErrorCode::kIo, fmt::format("laminad: {}", error.message()));
  ApiReply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  reply.text = parser.get().body();
  reply.body = nlohmann::json::parse(reply.text, nullptr, /*allow_exceptions=*/false);
  return reply;
}

}  // namespace lamina::cli
