#include "mgmt/http_server.h"
#include "base/json_text.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <boost/beast/websocket/rfc6455.hpp>

#include "base/log.h"
#include "mgmt/console_session.h"

namespace lamina::mgmt {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;

constexpr uint32_t kMaxHeaderBytes = 16 * 1024;

http::response<http::string_body> to_reply(const ApiResponse& response, unsigned version,
                                           bool keep_alive) {
  http::response<http::string_body> reply{static_cast<http::status>(response.status), version};
  reply.set(http::field::server, "laminad");
  reply.set(http::field::content_type, response.content_type);
  reply.keep_alive(keep_alive);
  reply.body() = response.body;
  reply.prepare_payload();
  return reply;
}

ApiResponse plain_error(int status, std::string_view message) {
  return {status, "application/json",
          json_text(nlohmann::json{
              {"error", {{"status", status}, {"field", ""}, {"message", message}}}}) +
              "\n"};
}

void serve_connection(Local::socket socket, ApiRouter& router) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(ApiRouter::kMaxBodyBytes);
    beast::error_code error;
    http::read(socket, buffer, parser, error);
    if (error == http::error::end_of_stream || error == asio::error::eof ||
        error == asio::error::connection_reset) {
      break;
    }
    if (error) {
      // A request the parser refused gets one answer, then the connection closes.
      const int status = error == http::error::body_limit ? 413 : 400;
      http::write(socket, to_reply(plain_error(status, error.message()), 11, false), error);
      break;
    }
    const auto& request = parser.get();
    if (beast::websocket::is_upgrade(request)) {
      auto console = router.open_console(std::string(request.target()));
      if (console) return serve_console_session(std::move(socket), request, std::move(*console));
      http::write(socket, to_reply(console.error(), request.version(), false), error);
      break;
    }
    const ApiResponse response = router.handle(
        {std::string(request.method_string()), std::string(request.target()), request.body()});
    auto reply = to_reply(response, request.version(), request.keep_alive());
    http::write(socket, reply, error);
    if (error || !reply.keep_alive()) break;
  }
  beast::error_code ignored;
  socket.shutdown(Local::socket::shutdown_both, ignored);
}

}  // namespace

struct HttpServer::State {
  asio::io_context io;
  Local::acceptor acceptor{io};
  ApiRouter* router = nullptr;
  std::filesystem::path path;
  std::atomic<int> connections = 0;
  std::atomic<bool> stopping = false;
};

HttpServer::HttpServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::listen(const std::filesystem::path& path,
                                                       ApiRouter& router) {
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("{} exists and is not a socket; not replacing it", path.string()));
    }
    ::unlink(path.c_str());
  }
  auto state = std::make_unique<State>();
  state->router = &router;
  state->path = path;
  beast::error_code error;
  state->acceptor.open(Local(), error);
  // Bound under a umask that leaves the socket to its owner and group only.
  const mode_t previous = ::umask(007);
  if (!error) state->acceptor.bind(Local::endpoint(path.string()), error);
  ::umask(previous);
  if (!error) state->acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    return fail(ErrorCode::kIo, fmt::format("{}: {}", path.string(), error.message()));
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(state)));
}

void HttpServer::serve() {
  while (!state_->stopping) {
    beast::error_code error;
    Local::socket socket = state_->acceptor.accept(error);
    if (error) {
      if (state_->stopping) break;
      continue;
    }
    if (state_->connections >= kMaxConnections) {
      http::write(socket, to_reply(plain_error(503, "too many connections"), 11, false), error);
      continue;
    }
    ++state_->connections;
    std::thread([socket = std::move(socket), state = state_.get()]() mutable {
      serve_connection(std::move(socket), *state->router);
      --state->connections;
    }).detach();
  }
}

void HttpServer::stop() {
  if (!state_ || state_->stopping.exchange(true)) return;
  // Wakes the blocking accept() (Linux returns EINVAL from accept on a shut-down listener).
  ::shutdown(state_->acceptor.native_handle(), SHUT_RDWR);
  ::unlink(state_->path.c_str());
}

}  // namespace lamina::mgmt
