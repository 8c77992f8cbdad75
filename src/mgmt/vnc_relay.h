#pragma once
// The VNC relay: a running VM's VNC server over laminad's API (GET /v1/vms/NAME/vnc with a WebSocket
// upgrade), so a remote client reaches the screen through the API's own TLS and token checks
// (`lamina vm vnc`, or a noVNC page: binary messages carry the RFB stream both ways). laminad
// connects to the socket the VM's definition names (it opened that socket for the worker) and
// copies bytes: RFB's own authentication (a password file) still happens end to end.
//
// Runs on the connection's thread and its io_context until either side closes. Each direction
// of the bridge has one read in flight and writes it before reading more, so a slow side holds
// back the other (TCP's flow control) instead of growing a buffer.

#include <array>
#include <memory>
#include <string>

#include <boost/asio/connect.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "machine/display_option.h"

namespace lamina::mgmt {

// Opens a connection to the VNC server of `display` on `socket` (a local or TCP socket of io).
// A server bound to a wildcard address is reached on the loopback one.
inline boost::system::error_code connect_to_vnc(boost::asio::io_context& io,
                                                const machine::DisplayOption& display,
                                                boost::asio::generic::stream_protocol::socket& socket) {
  namespace asio = boost::asio;
  boost::system::error_code error;
  if (display.kind == machine::DisplayKind::kVncUnix) {
    asio::local::stream_protocol::socket local(io);
    local.connect(asio::local::stream_protocol::endpoint(display.path.string()), error);
    if (!error) socket = asio::generic::stream_protocol::socket(std::move(local));
    return error;
  }
  std::string host = display.host;
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::") host = "::1";
  asio::ip::tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, std::to_string(display.port), error);
  if (error) return error;
  asio::ip::tcp::socket tcp(io);
  asio::connect(tcp, endpoints, error);
  if (!error) socket = asio::generic::stream_protocol::socket(std::move(tcp));
  return error;
}

// Copies bytes between an open binary WebSocket and a stream socket on the same io_context,
// both ways, until either side closes; then closes both. Used by laminad's relay (after it
// accepts the upgrade) and by `lamina vm vnc` (after its handshake).
template <typename WebSocket>
class WebSocketBridge : public std::enable_shared_from_this<WebSocketBridge<WebSocket>> {
 public:
  WebSocketBridge(WebSocket& ws, boost::asio::generic::stream_protocol::socket socket)
      : ws_(ws), socket_(std::move(socket)) {}

  void start() {
    ws_.read_message_max(kMaxMessage);
    ws_to_socket();
    socket_to_ws();
  }

 private:
  // An RFB client message is small; a big one is not RFB.
  static constexpr size_t kMaxMessage = 1 << 20;

  void ws_to_socket() {
    auto self = this->shared_from_this();
    ws_.async_read(incoming_, [self](boost::beast::error_code error, size_t) {
      if (error) return self->close();
      boost::asio::async_write(self->socket_, self->incoming_.data(),
                               [self](boost::beast::error_code write_error, size_t) {
                                 self->incoming_.consume(self->incoming_.size());
                                 if (write_error) return self->close();
                                 self->ws_to_socket();
                               });
    });
  }

  void socket_to_ws() {
    auto self = this->shared_from_this();
    socket_.async_read_some(boost::asio::buffer(outgoing_),
                            [self](boost::beast::error_code error, size_t count) {
      if (error) return self->close();
      self->writing_ = true;
      self->ws_.async_write(boost::asio::buffer(self->outgoing_.data(), count),
                            [self](boost::beast::error_code write_error, size_t) {
                              self->writing_ = false;
                              if (write_error || self->closed_) return self->close();
                              self->socket_to_ws();
                            });
    });
  }

  // Either side ending ends both: the socket is shut, the WebSocket closed.
  void close() {
    if (closed_) return;
    closed_ = true;
    boost::beast::error_code ignored;
    socket_.shutdown(boost::asio::socket_base::shutdown_both, ignored);
    socket_.close(ignored);
    if (writing_) {
      // A close frame cannot go while a message is being written: drop the connection.
      boost::beast::get_lowest_layer(ws_).close(ignored);
    } else if (ws_.is_open()) {
      ws_.async_close(boost::beast::websocket::close_code::normal,
                      [self = this->shared_from_this()](boost::beast::error_code) {});
    }
  }

  WebSocket& ws_;
  boost::asio::generic::stream_protocol::socket socket_;
  boost::beast::flat_buffer incoming_;
  std::array<char, 64 * 1024> outgoing_{};
  bool closed_ = false;
  bool writing_ = false;  // a message to the WebSocket is being written
};

// Serves one relay on the connection's thread with `vnc` connected to the VM's VNC server
// (connect_to_vnc): accepts the upgrade and copies until either side closes.
template <typename Stream>
void serve_vnc_relay(boost::asio::io_context& io, Stream& stream,
                     const boost::beast::http::request<boost::beast::http::string_body>& request,
                     boost::asio::generic::stream_protocol::socket vnc) {
  boost::beast::websocket::stream<Stream&> ws(stream);
  boost::beast::error_code error;
  ws.accept(request, error);
  if (error) return;
  ws.binary(true);
  std::make_shared<WebSocketBridge<decltype(ws)>>(ws, std::move(vnc))->start();
  io.run();
}

}  // namespace lamina::mgmt
