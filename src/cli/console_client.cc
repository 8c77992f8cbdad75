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

#include "cli/laminad_websocket.h"
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

// Types `line` and a newline as one message and closes normally: the server forwards messages
// in order, so the guest has the line before the close is handled. A server that refused the
// input closes first, with its reason.
template <typename WebSocket>
Result<void> send_line(asio::io_context& io, WebSocket& ws, const std::string& line) {
  const std::string message = line + "\n";
  beast::error_code failure;
  ws.async_write(asio::buffer(message), [&](beast::error_code write_error, size_t) {
    if (write_error) {
      failure = write_error;
      return io.stop();
    }
    ws.async_close(websocket::close_code::normal, [&](beast::error_code close_error) {
      failure = close_error;
      io.stop();
    });
  });
  io.run();
  // A refusal (another writer, the VM gone) arrives as the server's close reason.
  const auto& reason = ws.reason().reason;
  if (!reason.empty()) return fail(ErrorCode::kInvalidArgument, std::string(reason.data(), reason.size()));
  if (failure) return fail(ErrorCode::kIo, fmt::format("sending to the console: {}", failure.message()));
  return {};
}

// The session on the console's open WebSocket (over a Unix socket or TLS), bound to io.
template <typename WebSocket>
Result<void> run_console(asio::io_context& io, WebSocket& ws, const ConsoleAttachOptions& options) {
  if (options.send) return send_line(io, ws, *options.send);
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
  if (auto checked = check_websocket_resource(options.connect,
                                              fmt::format("/v1/vms/{}/console", options.vm));
      !checked) {
    return checked;
  }
  return with_laminad_websocket(
      options.connect,
      fmt::format("/v1/vms/{}/console?mode={}", options.vm, options.read_only ? "ro" : "rw"),
      [&](asio::io_context& io, auto& ws) { return run_console(io, ws, options); });
}

}  // namespace lamina::cli
