#include "cli/console_client.h"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <variant>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/api_client.h"
#include "cli/tls_client.h"
#include "machine/terminal_escape.h"
#include "machine/terminal_mode.h"

namespace lamina::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using Local = asio::local::stream_protocol;

void write_stdout(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(STDOUT_FILENO, bytes.data(), bytes.size());
    if (written <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(written));
  }
}

// The session on a connected stream (Unix socket or TLS), bound to io.
template <typename Stream>
Result<void> run_console(asio::io_context& io, Stream& stream,
                         const ConsoleAttachOptions& options) {
  websocket::stream<Stream&> ws(stream);
  beast::error_code error;
  if (const char* token = std::getenv("LAMINA_TOKEN"); token && *token) {
    ws.set_option(websocket::stream_base::decorator([value = std::string(token)](
                                                        websocket::request_type& request) {
      request.set(http::field::authorization, "Bearer " + value);
    }));
  }
  const std::string target =
      fmt::format("/v1/vms/{}/console?mode={}", options.vm, options.read_only ? "ro" : "rw");
  websocket::response_type response;
  ws.handshake(response, "laminad", target, error);
  if (error) {
    // A refused upgrade carries laminad's JSON error.
    const auto body = nlohmann::json::parse(response.body(), nullptr, false);
    if (body.is_object() && body.contains("error")) {
      return fail(ErrorCode::kInvalidArgument, body["error"].value("message", error.message()));
    }
    // Without the body, laminad's status says it.
    switch (response.result_int()) {
      case 401: return fail(ErrorCode::kInvalidArgument, "a valid bearer token is needed");
      case 404: return fail(ErrorCode::kNotFound, fmt::format("no VM named {}", options.vm));
      case 409:
        return fail(ErrorCode::kInvalidArgument,
                    fmt::format("{} is not running (or its serial port goes elsewhere)",
                                options.vm));
      default: break;
    }
    return fail(ErrorCode::kIo, fmt::format("console: {}", error.message()));
  }
  ws.binary(true);

  const bool terminal = ::isatty(STDIN_FILENO) != 0;
  std::optional<machine::TerminalRawMode> raw;
  if (terminal && !options.read_only) raw.emplace(STDIN_FILENO);
  if (terminal) {
    fmt::print(stderr, "lamina vm console: attached to {} ({}Ctrl-A x detaches)\r\n", options.vm,
               options.read_only ? "read-only; " : "");
  }
  machine::TerminalEscape escape;
  std::string close_reason;

  // Output: every message from the server to stdout, until it closes.
  beast::flat_buffer incoming;
  std::function<void()> read_output = [&] {
    ws.async_read(incoming, [&](beast::error_code read_error, size_t) {
      if (read_error) {
        if (read_error == websocket::error::closed) close_reason = std::string(ws.reason().reason.data(), ws.reason().reason.size());
        io.stop();
        return;
      }
      const auto data = incoming.cdata();
      write_stdout(std::string_view(static_cast<const char*>(data.data()), data.size()));
      incoming.consume(incoming.size());
      read_output();
    });
  };
  read_output();

  // Input: stdin to the server, one message per read; EOF from a pipe ends input only.
  asio::posix::stream_descriptor input(io, ::dup(STDIN_FILENO));
  std::array<char, 1024> buffer{};
  std::string pending;
  bool sending = false;
  std::function<void()> send_pending;
  std::function<void()> read_input = [&] {
    input.async_read_some(asio::buffer(buffer), [&](beast::error_code read_error, size_t count) {
      if (read_error) return;  // EOF: keep showing output
      std::string_view chunk(buffer.data(), count);
      if (raw && raw->active()) {
        const auto filtered = escape.feed(std::span<const char>(chunk.data(), chunk.size()));
        if (filtered.show_help) write_stdout(machine::TerminalEscape::help_text());
        pending += filtered.to_guest;
        if (filtered.quit) {
          ws.async_close(websocket::close_code::normal, [&](beast::error_code) { io.stop(); });
          return;
        }
      } else {
        pending += chunk;
      }
      send_pending();
      read_input();
    });
  };
  send_pending = [&] {
    if (sending || pending.empty()) return;
    sending = true;
    auto message = std::make_shared<std::string>(std::move(pending));
    pending.clear();
    ws.async_write(asio::buffer(*message), [&, message](beast::error_code write_error, size_t) {
      sending = false;
      if (write_error) return io.stop();
      send_pending();
    });
  };
  if (!options.read_only) read_input();
  io.run();
  raw.reset();
  if (terminal) fmt::print(stderr, "\r\nlamina vm console: detached from {}\n", options.vm);
  if (!close_reason.empty() && close_reason != "the VM stopped") {
    return fail(ErrorCode::kInvalidArgument, close_reason);
  }
  return {};
}

}  // namespace

Result<void> attach_console(const ConsoleAttachOptions& options) {
  auto address = resolve_api_address(options.connect);
  if (!address) return fail(address.error());
  // Boost 1.74's WebSocket client drops a refused upgrade's body, so laminad's reason (no such
  // VM, not running, no token) is asked for first with a plain GET of the same resource.
  {
    auto client = ApiClient::connect(options.connect);
    if (!client) return fail(client.error());
    auto reply = (*client)->call("GET", fmt::format("/v1/vms/{}/console", options.vm));
    if (!reply) return fail(reply.error());
    if (reply->status != 200) {
      const auto& body = reply->body;
      if (body.is_object() && body.contains("error") && body["error"].is_object()) {
        return fail(ErrorCode::kInvalidArgument,
                    body["error"].value("message", fmt::format("HTTP {}", reply->status)));
      }
      return fail(ErrorCode::kIo, fmt::format("laminad answered HTTP {}", reply->status));
    }
  }
  asio::io_context io;
  if (const auto* unix_address = std::get_if<UnixAddress>(&*address)) {
    Local::socket socket(io);
    beast::error_code error;
    socket.connect(Local::endpoint(unix_address->path), error);
    if (error) {
      return fail(ErrorCode::kNotFound, fmt::format("cannot reach laminad at {}: {}",
                                                    unix_address->path, error.message()));
    }
    return run_console(io, socket, options);
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
  return run_console(io, stream, options);
}

}  // namespace lamina::cli
