#pragma once
// HttpServer: laminad's HTTP/1.1 endpoint on a Unix socket (Boost.Beast), handing each request
// to the ApiRouter. The socket is created 0660 in a directory laminad owns: its permissions are
// the access control. One thread accepts; each connection gets its own thread (at most
// kMaxConnections at once, more wait in the backlog), with bounded header and body sizes and
// an idle timeout, so a slow or hostile client cannot hold the daemon.
//
// Ownership: owns the socket and the threads; borrows the router. Thread-safety: start() and
// stop() from the owning thread.

#include <atomic>
#include <filesystem>
#include <memory>
#include <thread>

#include "base/error.h"
#include "mgmt/api_router.h"

namespace lamina::mgmt {

class HttpServer {
 public:
  static constexpr int kMaxConnections = 64;

  // Binds PATH (replacing a stale socket there, never another kind of file).
  static Result<std::unique_ptr<HttpServer>> listen(const std::filesystem::path& path,
                                                    ApiRouter& router);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves until stop() (or the destructor).
  void serve();
  void stop();

 private:
  struct State;
  explicit HttpServer(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace lamina::mgmt
