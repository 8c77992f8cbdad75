#pragma once
// A WebSocket to one of laminad's resources (the serial console, the VNC relay), over the
// address `lamina vm --connect` names: laminad's Unix socket, or TLS on TCP with the client
// certificate and bearer token from the environment (LAMINA_TLS_*, LAMINA_TOKEN).
//
//   check_websocket_resource(connect, path): a plain GET of the resource first, because Boost
//     1.74's WebSocket client drops a refused upgrade's body, and laminad's reason (no such
//     VM, not running, no display, no token) is in it.
//   with_laminad_websocket(connect, target, session): connects, upgrades, and runs
//     session(io, ws) with the open binary WebSocket; returns its result.
//
// Stateless functions; each blocks for its whole exchange.

#include <cstdlib>
#include <string>
#include <variant>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "cli/api_client.h"
#include "cli/tls_client.h"

namespace lamina::cli {

[[nodiscard]] Result<void> check_websocket_resource(const std::string& connect,
                                                    const std::string& path);

namespace detail {

// Upgrades `stream` to a WebSocket on `target` and runs the session on it.
template <typename Stream, typename Session>
Result<void> run_websocket(boost::asio::io_context& io, Stream& stream, const std::string& target,
                           Session& session) {
  namespace beast = boost::beast;
  namespace websocket = beast::websocket;
  websocket::stream<Stream&> ws(stream);
  if (const char* token = std::getenv("LAMINA_TOKEN"); token && *token) {
    ws.set_option(websocket::stream_base::decorator(
        [value = std::string(token)](websocket::request_type& request) {
          request.set(beast::http::field::authorization, "Bearer " + value);
        }));
  }
  websocket::response_type response;
  beast::error_code error;
  ws.handshake(response, "laminad", target, error);
  if (error) {
    const auto body = nlohmann::json::parse(response.body(), nullptr, false);
    if (body.is_object() && body.contains("error") && body["error"].is_object()) {
      return fail(ErrorCode::kInvalidArgument, body["error"].value("message", error.message()));
    }
    switch (response.result_int()) {
      case 401: return fail(ErrorCode::kInvalidArgument, "a valid bearer token is needed");
      case 404: return fail(ErrorCode::kNotFound, fmt::format("laminad has no {}", target));
      case 409: return fail(ErrorCode::kInvalidArgument, fmt::format("{} is not available now", target));
      default: break;
    }
    return fail(ErrorCode::kIo, fmt::format("{}: {}", target, error.message()));
  }
  ws.binary(true);
  return session(io, ws);
}

}  // namespace detail

template <typename Session>
Result<void> with_laminad_websocket(const std::string& connect, const std::string& target,
                                    Session session) {
  namespace asio = boost::asio;
  auto address = resolve_api_address(connect);
  if (!address) return fail(address.error());
  asio::io_context io;
  if (const auto* unix_address = std::get_if<UnixAddress>(&*address)) {
    asio::local::stream_protocol::socket socket(io);
    boost::system::error_code error;
    socket.connect(asio::local::stream_protocol::endpoint(unix_address->path), error);
    if (error) {
      return fail(ErrorCode::kNotFound, fmt::format("cannot reach laminad at {}: {}",
                                                    unix_address->path, error.message()));
    }
    return detail::run_websocket(io, socket, target, session);
  }
  const auto& tls_address = std::get<TlsAddress>(*address);
  auto context = TlsClientContext::from_environment();
  if (!context) return fail(context.error());
  asio::ip::tcp::socket socket(io);
  if (auto connected = connect_tcp(socket, tls_address.host, tls_address.port); !connected) {
    return fail(connected.error());
  }
  asio::ssl::stream<asio::ip::tcp::socket&> stream(socket, (*context)->context());
  if (auto handshaken = handshake(stream, tls_address.host); !handshaken) {
    return fail(handshaken.error());
  }
  return detail::run_websocket(io, stream, target, session);
}

}  // namespace lamina::cli
