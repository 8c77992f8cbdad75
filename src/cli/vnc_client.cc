#include "cli/vnc_client.h"

#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <fmt/format.h>

#include "cli/laminad_websocket.h"
#include "mgmt/vnc_relay.h"

namespace lamina::cli {
namespace {

namespace asio = boost::asio;
using Generic = asio::generic::stream_protocol;
using GenericAcceptor = asio::basic_socket_acceptor<Generic>;

// The listening socket --listen names; `shown` is what viewers connect to.
Result<GenericAcceptor> listen_for_viewers(asio::io_context& io, const std::string& listen,
                                             std::string& shown) {
  boost::system::error_code error;
  if (listen.starts_with("unix:")) {
    const std::string path = listen.substr(5);
    if (path.empty()) return fail(ErrorCode::kInvalidArgument, "--listen unix: needs a PATH");
    // A stale socket of a previous run goes; any other file stays and the bind fails.
    struct stat status {};
    if (::lstat(path.c_str(), &status) == 0 && S_ISSOCK(status.st_mode)) ::unlink(path.c_str());
    asio::local::stream_protocol::acceptor acceptor(io);
    acceptor.open(asio::local::stream_protocol(), error);
    if (!error) acceptor.bind(asio::local::stream_protocol::endpoint(path), error);
    if (!error) ::chmod(path.c_str(), 0600);
    if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
    if (error) {
      return fail(ErrorCode::kInvalidArgument, fmt::format("--listen {}: {}", listen, error.message()));
    }
    shown = listen;
    return GenericAcceptor(io, Generic(AF_UNIX, 0), acceptor.release());
  }
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("--listen: '{}' is neither HOST:PORT nor unix:PATH", listen));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  const std::string port = listen.substr(colon + 1);
  asio::ip::tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, port, asio::ip::tcp::resolver::passive, error);
  if (error || endpoints.empty()) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("--listen {}: {}", listen, error.message()));
  }
  const asio::ip::tcp::endpoint endpoint = *endpoints.begin();
  asio::ip::tcp::acceptor acceptor(io);
  acceptor.open(endpoint.protocol(), error);
  if (!error) acceptor.set_option(asio::socket_base::reuse_address(true), error);
  if (!error) acceptor.bind(endpoint, error);
  if (!error) acceptor.listen(asio::socket_base::max_listen_connections, error);
  if (error) {
    return fail(ErrorCode::kInvalidArgument, fmt::format("--listen {}: {}", listen, error.message()));
  }
  const auto bound = acceptor.local_endpoint();
  shown = bound.address().is_v6() ? fmt::format("[{}]:{}", bound.address().to_string(), bound.port())
                                  : fmt::format("{}:{}", bound.address().to_string(), bound.port());
  const int family = endpoint.protocol().family();
  return GenericAcceptor(io, Generic(family, IPPROTO_TCP), acceptor.release());
}

// One viewer's session: the relay's WebSocket bridged to its socket until either side ends.
Result<void> serve_viewer(const VncRelayOptions& options, int viewer) {
  const std::string target = fmt::format("/v1/vms/{}/vnc", options.vm);
  return with_laminad_websocket(options.connect, target, [&](asio::io_context& io, auto& ws) -> Result<void> {
    int family = AF_UNIX;
    sockaddr_storage address{};
    socklen_t length = sizeof(address);
    if (::getsockname(viewer, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
      family = address.ss_family;
    }
    Generic::socket socket(io, Generic(family, family == AF_UNIX ? 0 : IPPROTO_TCP), viewer);
    std::make_shared<mgmt::WebSocketBridge<std::remove_reference_t<decltype(ws)>>>(ws, std::move(socket))
        ->start();
    io.run();
    return {};
  });
}

}  // namespace

Result<void> relay_vnc(const VncRelayOptions& options) {
  const std::string path = fmt::format("/v1/vms/{}/vnc", options.vm);
  if (auto checked = check_websocket_resource(options.connect, path); !checked) return checked;
  asio::io_context io;
  std::string shown;
  auto acceptor = listen_for_viewers(io, options.listen, shown);
  if (!acceptor) return fail(acceptor.error());
  fmt::print(stderr, "lamina vm vnc: {}'s screen for VNC viewers at {} ({})\n", options.vm, shown,
             options.once ? "one session" : "Ctrl-C stops");
  for (;;) {
    boost::system::error_code error;
    Generic::socket viewer(io);
    acceptor->accept(viewer, error);
    if (error) return fail(ErrorCode::kIo, fmt::format("accept: {}", error.message()));
    const int fd = viewer.release();
    if (options.once) {
      auto served = serve_viewer(options, fd);
      return served;
    }
    // Each viewer on its own thread, which owns its socket and its connection to laminad.
    std::thread([options, fd] {
      if (auto served = serve_viewer(options, fd); !served) {
        fmt::print(stderr, "lamina vm vnc: {}\n", served.error().message());
        ::close(fd);
      }
    }).detach();
  }
}

}  // namespace lamina::cli
