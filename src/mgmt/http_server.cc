#include "mgmt/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <fmt/format.h>
#include <openssl/crypto.h>

#include "base/json_text.h"
#include "mgmt/tls_setup.h"
#include "base/log.h"
#include "mgmt/console_session.h"
#include "mgmt/incoming_migration.h"
#include "mgmt/vnc_relay.h"
#include "migration/migration_protocol.h"

namespace lamina::mgmt {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using Local = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;

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

// The request carries the bearer token (compared in constant time).
bool authorized(const http::request<http::string_body>& request, const std::string& token) {
  if (token.empty()) return true;
  const auto header = request[http::field::authorization];
  const std::string expected = "Bearer " + token;
  return header.size() == expected.size() &&
         CRYPTO_memcmp(header.data(), expected.data(), expected.size()) == 0;
}

// The event stream as Server-Sent Events (HTML Living Standard, "Server-sent events"): one
// message per event (id, event = its kind, data = the event as one line of JSON), and a
// comment every 15 s while nothing happens so idle connections and proxies stay open. Ends
// when the client goes (the next write fails) or laminad stops.
template <typename Stream>
void serve_event_stream(Stream& stream, unsigned version, ApiRouter& router,
                        ApiRouter::EventStream events, const std::atomic<bool>& stopping) {
  http::response<http::empty_body> header{http::status::ok, version};
  header.set(http::field::content_type, "text/event-stream");
  header.set(http::field::cache_control, "no-cache");
  header.chunked(true);
  http::response_serializer<http::empty_body> serializer{header};
  beast::error_code error;
  http::write_header(stream, serializer, error);
  while (!error && !stopping) {
    auto batch = router.next_events(events, std::chrono::seconds(15));
    if (!batch) break;
    std::string text;
    for (const auto& event : *batch) {
      text += fmt::format("id: {}\nevent: {}\ndata: {}\n\n", event.value("id", int64_t{0}),
                          event.value("kind", std::string()), json_text(event));
    }
    if (text.empty()) text = ": nothing new\n\n";
    asio::write(stream, http::make_chunk(asio::buffer(text)), error);
  }
  if (!error) asio::write(stream, http::make_chunk_last(), error);
}

// A further connection of an incoming migration (its first message a kJoin {"join", "lane"}):
// pages for the migration it joins, until the lane's kLaneEnd.
template <typename WebSocket, typename Next>
void serve_migration_lane(WebSocket& ws, std::span<const std::byte> join, VmService& service,
                          Next& next) {
  beast::error_code error;
  auto refuse = [&](const std::string& why) {
    const auto reply = migration::make_json_message(migration::MessageType::kRefuse, {{"error", why}});
    ws.write(asio::buffer(reply), error);
  };
  auto body = migration::message_json(join);
  if (!body || !body->is_object() || !(*body)["join"].is_string() ||
      !(*body)["lane"].is_number_unsigned()) {
    return refuse("a join names its migration (join) and its lane");
  }
  auto migration = service.migration_joins().find((*body)["join"].get<std::string>());
  if (!migration) return refuse("no such migration here (it ended, or the join id is wrong)");
  const uint64_t lane = (*body)["lane"].get<uint64_t>();
  if (lane > migration::kMaxConnections) return refuse("no such lane");
  if (auto joined = migration->join_lane(static_cast<uint32_t>(lane)); !joined) {
    return refuse(joined.error().message());
  }
  const auto accepted = migration::make_json_message(migration::MessageType::kAccept, nlohmann::json::object());
  ws.write(asio::buffer(accepted), error);
  if (error) return;
  for (;;) {
    auto message = next();
    if (!message) return;
    auto done = migration->receive_lane(static_cast<uint32_t>(lane), *message);
    if (!done) {
      log_warn("incoming migration lane {}: {}", lane, done.error().message());
      return;
    }
    if (*done) break;
  }
  ws.close(beast::websocket::close_code::normal, error);
}

// An incoming live migration (GET /v1/migrations/incoming with a WebSocket upgrade): each
// binary message goes to IncomingMigration, whose answers go back; the connection ends with
// the migration. A peer that stops sending for two minutes ends it too.
template <typename Stream>
void serve_incoming_migration(Stream& stream, const http::request<http::string_body>& request,
                              VmService& service) {
  const int fd = beast::get_lowest_layer(stream).native_handle();
  timeval timeout{120, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  // The answers (kAccept, kStarted) are small and the source waits for them: no Nagle delay.
  const int no_delay = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &no_delay, sizeof(no_delay));
  beast::websocket::stream<Stream&> ws(stream);
  ws.read_message_max(migration::kMaxMessage);
  beast::error_code error;
  ws.accept(request, error);
  if (error) return;
  ws.binary(true);
  auto next = [&]() -> std::optional<std::vector<std::byte>> {
    beast::flat_buffer buffer;
    ws.read(buffer, error);
    if (error) return std::nullopt;
    const auto* data = static_cast<const std::byte*>(buffer.data().data());
    return std::vector<std::byte>(data, data + buffer.size());
  };
  auto first = next();
  if (!first) return;
  auto first_type = migration::message_type(*first);
  if (first_type && *first_type == migration::MessageType::kJoin) {
    return serve_migration_lane(ws, *first, service, next);
  }
  auto opened = IncomingMigration::offer(service, *first);
  ws.write(asio::buffer(opened.reply), error);
  if (error || !opened.migration) {
    if (opened.migration) opened.migration->close();
    return;
  }
  // Ends the migration here (unless its VM started) however this connection ends.
  struct Closer {
    IncomingMigration& migration;
    ~Closer() { migration.close(); }
  } closer{*opened.migration};
  while (!opened.migration->finished()) {
    auto message = next();
    if (!message) return;
    auto reply = opened.migration->receive(*message);
    if (!reply) {
      log_warn("incoming migration: {}", reply.error().message());
      return;
    }
    if (*reply) {
      ws.write(asio::buffer(**reply), error);
      if (error) return;
    }
  }
  ws.close(beast::websocket::close_code::normal, error);
}

// Requests on one connection until it closes; a console upgrade or the event stream hands the
// stream over.
template <typename Stream>
void serve_requests(asio::io_context& io, Stream& stream, ApiRouter& router,
                    const std::string& token, const std::atomic<bool>& stopping) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    parser.body_limit(ApiRouter::kMaxBodyBytes);
    beast::error_code error;
    http::read(stream, buffer, parser, error);
    if (error == http::error::end_of_stream || error == asio::error::eof ||
        error == asio::error::connection_reset || error == ssl::error::stream_truncated) {
      return;
    }
    if (error) {
      // A request the parser refused gets one answer, then the connection closes.
      const int status = error == http::error::body_limit ? 413 : 400;
      http::write(stream, to_reply(plain_error(status, error.message()), 11, false), error);
      return;
    }
    const auto& request = parser.get();
    if (!authorized(request, token)) {
      auto reply = to_reply(plain_error(401, "a valid bearer token is needed"), request.version(),
                            false);
      reply.set(http::field::www_authenticate, "Bearer");
      http::write(stream, reply, error);
      return;
    }
    if (beast::websocket::is_upgrade(request) && ApiRouter::is_incoming_migration(std::string_view(request.target().data(), request.target().size()))) {
      return serve_incoming_migration(stream, request, router.service());
    }
    if (beast::websocket::is_upgrade(request) &&
        ApiRouter::is_vnc(std::string_view(request.target().data(), request.target().size()))) {
      auto display = router.open_vnc(std::string(request.target()));
      if (!display) {
        http::write(stream, to_reply(display.error(), request.version(), false), error);
        return;
      }
      boost::asio::generic::stream_protocol::socket vnc(io);
      if (const auto refused = connect_to_vnc(io, *display, vnc)) {
        http::write(stream,
                    to_reply(plain_error(502, "the VM's VNC server does not answer: " + refused.message()),
                             request.version(), false),
                    error);
        return;
      }
      return serve_vnc_relay(io, stream, request, std::move(vnc));
    }
    if (beast::websocket::is_upgrade(request)) {
      auto console = router.open_console(std::string(request.target()));
      if (console) return serve_console_session(io, stream, request, std::move(*console));
      http::write(stream, to_reply(console.error(), request.version(), false), error);
      return;
    }
    const std::string target(request.target());
    if (request.method() == http::verb::get && ApiRouter::is_event_stream(target)) {
      const auto last_id = request.find("Last-Event-ID");
      const std::string resume = last_id == request.end() ? "" : std::string(last_id->value());
      auto events = router.open_event_stream(target, resume);
      if (events) return serve_event_stream(stream, request.version(), router, *events, stopping);
      http::write(stream, to_reply(events.error(), request.version(), false), error);
      return;
    }
    const ApiResponse response = router.handle(
        {std::string(request.method_string()), std::string(request.target()), request.body()});
    auto reply = to_reply(response, request.version(), request.keep_alive());
    http::write(stream, reply, error);
    if (error || !reply.keep_alive()) return;
  }
}

Result<void> load_tls(ssl::context& context, const TcpListenOptions& options) {
  require_modern_tls(context);
  if (auto loaded = load_tls_identity(context, options.certificate, "--tls-cert", options.key, "--tls-key");
      !loaded) {
    return loaded;
  }
  if (!options.client_ca.empty()) {
    if (auto loaded = load_tls_ca(context, options.client_ca, "--tls-ca"); !loaded) return loaded;
    context.set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  }
  return {};
}

}  // namespace

struct HttpServer::State {
  asio::io_context io;
  Local::acceptor acceptor{io};
  std::optional<Tcp::acceptor> tcp_acceptor;
  ssl::context tls{ssl::context::tls_server};
  std::string token;
  ApiRouter* router = nullptr;
  std::filesystem::path path;
  std::atomic<int> connections = 0;
  std::atomic<bool> stopping = false;
  std::jthread tcp_thread;
};

HttpServer::HttpServer(std::unique_ptr<State> state) : state_(std::move(state)) {}

HttpServer::~HttpServer() { stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::listen(
    const std::filesystem::path& path, ApiRouter& router,
    const std::optional<TcpListenOptions>& tcp) {
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
  if (tcp) {
    if (tcp->client_ca.empty() && tcp->token.empty()) {
      return fail(ErrorCode::kInvalidArgument,
                  "--listen needs client authentication: --tls-ca (client certificates) or "
                  "--token-file (a bearer token)");
    }
    if (auto loaded = load_tls(state->tls, *tcp); !loaded) return fail(loaded.error());
    state->token = tcp->token;
    beast::error_code error;
    const auto address = asio::ip::make_address(tcp->host, error);
    if (error) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("--listen {}: not an IP address", tcp->host));
    }
    state->tcp_acceptor.emplace(state->io);
    const Tcp::endpoint endpoint(address, tcp->port);
    state->tcp_acceptor->open(endpoint.protocol(), error);
    if (!error) state->tcp_acceptor->set_option(asio::socket_base::reuse_address(true), error);
    if (!error) state->tcp_acceptor->bind(endpoint, error);
    if (!error) state->tcp_acceptor->listen(asio::socket_base::max_listen_connections, error);
    if (error) {
      return fail(ErrorCode::kIo, fmt::format("--listen {}:{}: {}", tcp->host, tcp->port,
                                              error.message()));
    }
  }
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

uint16_t HttpServer::tcp_port() const {
  if (!state_->tcp_acceptor) return 0;
  beast::error_code error;
  return state_->tcp_acceptor->local_endpoint(error).port();
}

void HttpServer::serve() {
  State& state = *state_;
  // Each connection runs on its own thread and io_context; the accepted socket moves there.
  auto admit = [&state]() -> bool {
    if (state.connections >= kMaxConnections) return false;
    ++state.connections;
    return true;
  };
  if (state.tcp_acceptor) {
    state.tcp_thread = std::jthread([&state, admit] {
      while (!state.stopping) {
        beast::error_code error;
        Tcp::socket accepted = state.tcp_acceptor->accept(error);
        if (error) {
          if (state.stopping) break;
          continue;
        }
        if (!admit()) continue;  // closed unanswered: TLS comes before any HTTP reply
        const auto protocol = accepted.local_endpoint(error).protocol();
        std::thread([&state, protocol, fd = accepted.release()] {
          asio::io_context io;
          Tcp::socket socket(io, protocol, fd);
          ssl::stream<Tcp::socket&> stream(socket, state.tls);
          beast::error_code handshake_error;
          stream.handshake(ssl::stream_base::server, handshake_error);
          if (!handshake_error) {
            serve_requests(io, stream, *state.router, state.token, state.stopping);
          }
          beast::error_code ignored;
          socket.close(ignored);
          --state.connections;
        }).detach();
      }
    });
  }
  while (!state.stopping) {
    beast::error_code error;
    Local::socket accepted = state.acceptor.accept(error);
    if (error) {
      if (state.stopping) break;
      continue;
    }
    if (!admit()) {
      http::write(accepted, to_reply(plain_error(503, "too many connections"), 11, false), error);
      continue;
    }
    std::thread([&state, fd = accepted.release()] {
      asio::io_context io;
      Local::socket socket(io, Local(), fd);
      serve_requests(io, socket, *state.router, std::string(), state.stopping);
      beast::error_code ignored;
      socket.shutdown(Local::socket::shutdown_both, ignored);
      --state.connections;
    }).detach();
  }
  if (state.tcp_thread.joinable()) state.tcp_thread.join();
}

void HttpServer::stop() {
  if (!state_ || state_->stopping.exchange(true)) return;
  // Wakes the blocking accept() calls (Linux returns EINVAL from accept on a shut-down
  // listener).
  ::shutdown(state_->acceptor.native_handle(), SHUT_RDWR);
  if (state_->tcp_acceptor) ::shutdown(state_->tcp_acceptor->native_handle(), SHUT_RDWR);
  ::unlink(state_->path.c_str());
}

}  // namespace lamina::mgmt
