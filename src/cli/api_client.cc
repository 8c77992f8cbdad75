#include "cli/api_client.h"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "base/json_text.h"
#include "cli/tls_client.h"
#include "mgmt/default_paths.h"

namespace lamina::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using Local = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

http::request<http::string_body> make_request(const std::string& method, const std::string& target,
                                              const nlohmann::json& body) {
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  request.set(http::field::host, "laminad");
  request.set(http::field::user_agent, "lamina");
  if (const std::string token = environment("LAMINA_TOKEN"); !token.empty()) {
    request.set(http::field::authorization, "Bearer " + token);
  }
  request.keep_alive(true);
  if (!body.is_null()) {
    request.set(http::field::content_type, "application/json");
    request.body() = json_text(body);
  }
  request.prepare_payload();
  return request;
}

template <typename Stream>
Result<ApiReply> exchange(Stream& stream, beast::flat_buffer& buffer, const std::string& method,
                          const std::string& target, const nlohmann::json& body) {
  beast::error_code error;
  http::write(stream, make_request(method, target, body), error);
  if (error) return fail(ErrorCode::kIo, fmt::format("laminad: {}", error.message()));
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  http::read(stream, buffer, parser, error);
  if (error) return fail(ErrorCode::kIo, fmt::format("laminad: {}", error.message()));
  ApiReply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  reply.text = parser.get().body();
  reply.body = nlohmann::json::parse(reply.text, nullptr, /*allow_exceptions=*/false);
  return reply;
}

// A GET whose body arrives piece by piece (an event stream): `on_text` sees each piece as it
// comes. A refused request's body is collected and returned as the reply.
template <typename Stream>
Result<ApiReply> follow(Stream& stream, beast::flat_buffer& buffer, const std::string& target,
                        const std::function<bool(std::string_view)>& on_text) {
  beast::error_code error;
  http::write(stream, make_request("GET", target, nullptr), error);
  if (error) return fail(ErrorCode::kIo, fmt::format("laminad: {}", error.message()));
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  http::read_header(stream, buffer, parser, error);
  if (error) return fail(ErrorCode::kIo, fmt::format("laminad: {}", error.message()));
  ApiReply reply;
  reply.status = static_cast<int>(parser.get().result_int());
  std::array<char, 4096> piece{};
  while (!parser.is_done()) {
    parser.get().body().data = piece.data();
    parser.get().body().size = piece.size();
    // read_some: hand over what has come (an event is small; read() would wait for 4 KiB).
    http::read_some(stream, buffer, parser, error);
    if (error == http::error::need_buffer) error = {};
    if (error) break;
    const std::string_view text(piece.data(), piece.size() - parser.get().body().size);
    if (reply.status >= 400) {
      reply.text += text;
    } else if (!on_text(text)) {
      return reply;
    }
  }
  if (reply.status >= 400) {
    reply.body = nlohmann::json::parse(reply.text, nullptr, /*allow_exceptions=*/false);
    return reply;
  }
  return fail(ErrorCode::kIo, fmt::format("laminad closed the stream{}",
                                          error ? ": " + error.message() : std::string()));
}

}  // namespace

Result<ApiAddress> resolve_api_address(const std::string& given) {
  const std::string address = given.empty() ? environment("LAMINA_CONNECT") : given;
  if (address.empty()) return UnixAddress{mgmt::default_socket().string()};
  if (address.starts_with("unix:")) return UnixAddress{address.substr(5)};
  if (address.starts_with("https://")) {
    std::string rest = address.substr(8);
    if (rest.ends_with('/')) rest.pop_back();
    const size_t colon = rest.rfind(':');
    if (colon != std::string::npos && colon > 0 && colon + 1 < rest.size()) {
      std::string host = rest.substr(0, colon);
      if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      return TlsAddress{host, rest.substr(colon + 1)};
    }
  }
  return fail(ErrorCode::kInvalidArgument,
              fmt::format("--connect {}: use unix:PATH or https://HOST:PORT", address));
}

struct ApiClient::Connection {
  asio::io_context io;
  std::optional<Local::socket> local;
  std::optional<Tcp::socket> tcp;
  std::unique_ptr<TlsClientContext> tls;
  std::optional<ssl::stream<Tcp::socket&>> secure;
  beast::flat_buffer buffer;
};

ApiClient::ApiClient(std::unique_ptr<Connection> connection) : connection_(std::move(connection)) {}
ApiClient::~ApiClient() = default;

Result<std::unique_ptr<ApiClient>> ApiClient::connect(const std::string& given) {
  auto address = resolve_api_address(given);
  if (!address) return fail(address.error());
  auto connection = std::make_unique<Connection>();
  beast::error_code error;
  if (const auto* unix_address = std::get_if<UnixAddress>(&*address)) {
    connection->local.emplace(connection->io);
    connection->local->connect(Local::endpoint(unix_address->path), error);
    if (error) {
      return fail(ErrorCode::kNotFound,
                  fmt::format("cannot reach laminad at {}: {} (start it with `laminad`, or say "
                              "where it listens with --connect unix:PATH)",
                              unix_address->path, error.message()));
    }
  } else {
    const auto& tls_address = std::get<TlsAddress>(*address);
    auto context = TlsClientContext::from_environment();
    if (!context) return fail(context.error());
    connection->tls = std::move(*context);
    connection->tcp.emplace(connection->io);
    if (auto connected = connect_tcp(*connection->tcp, tls_address.host, tls_address.port);
        !connected) {
      return fail(connected.error());
    }
    connection->secure.emplace(*connection->tcp, connection->tls->context());
    if (auto handshaken = handshake(*connection->secure, tls_address.host); !handshaken) {
      return fail(handshaken.error());
    }
  }
  return std::unique_ptr<ApiClient>(new ApiClient(std::move(connection)));
}

Result<ApiReply> ApiClient::call(const std::string& method, const std::string& target,
                                 const nlohmann::json& body) {
  if (connection_->secure) {
    return exchange(*connection_->secure, connection_->buffer, method, target, body);
  }
  return exchange(*connection_->local, connection_->buffer, method, target, body);
}

Result<ApiReply> ApiClient::follow(const std::string& target,
                                   const std::function<bool(std::string_view)>& on_text) {
  if (connection_->secure) {
    return lamina::cli::follow(*connection_->secure, connection_->buffer, target, on_text);
  }
  return lamina::cli::follow(*connection_->local, connection_->buffer, target, on_text);
}

}  // namespace lamina::cli
