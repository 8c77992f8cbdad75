#pragma once
// HttpServer: laminad's HTTP/1.1 endpoints (Boost.Beast), handing each request to the
// ApiRouter and console WebSocket upgrades to a ConsoleSession:
//   - always a Unix socket, created 0660 in a directory laminad owns: its permissions are the
//     access control;
//   - optionally TCP, only with TLS (OpenSSL), and only with client authentication: client
//     certificates signed by --tls-ca, or a bearer token (--token-file), or both.
// One thread accepts per endpoint; each connection gets its own thread and io_context (at most
// kMaxConnections at once, more are answered 503), with bounded header and body sizes.
//
// Ownership: owns the sockets, the TLS context and the threads; borrows the router.
// Thread-safety: serve() on one thread, stop() from any.

#include <atomic>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "base/error.h"
#include "mgmt/api_router.h"

namespace lamina::mgmt {

struct TcpListenOptions {
  std::string host;  // "127.0.0.1", "::", ...
  uint16_t port = 0;
  std::filesystem::path certificate;  // PEM chain of the server
  std::filesystem::path key;          // PEM private key
  std::filesystem::path client_ca;    // PEM CA that signs client certificates (optional)
  std::string token;                  // bearer token (optional; empty: none)
};

class HttpServer {
 public:
  static constexpr int kMaxConnections = 64;

  // Binds PATH (replacing a stale socket there, never another kind of file) and, when given,
  // the TCP endpoint (kInvalidArgument when it has no client authentication or bad TLS files).
  static Result<std::unique_ptr<HttpServer>> listen(const std::filesystem::path& path,
                                                    ApiRouter& router,
                                                    const std::optional<TcpListenOptions>& tcp);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The TCP port actually bound (after port 0), or 0 without TCP.
  uint16_t tcp_port() const;
  // Serves until stop() (or the destructor).
  void serve();
  void stop();

 private:
  struct State;
  explicit HttpServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace lamina::mgmt
