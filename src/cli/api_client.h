#pragma once
// ApiClient: `lamina vm`'s connection to laminad: HTTP/1.1 over laminad's Unix socket
// (Boost.Beast), JSON in and out. The address comes from --connect unix:PATH, else
// LAMINA_CONNECT, else laminad's default socket for this user.
//
// Ownership: owns its connection. Thread-safety: one thread.

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace lamina::cli {

struct ApiReply {
  int status = 0;
  nlohmann::json body;  // the parsed JSON body (or a string for text bodies)
  std::string text;     // the raw body
};

class ApiClient {
 public:
  // `address` as given to --connect ("" for the default). Connects at once: kNotFound with a
  // hint to start laminad when nothing listens.
  static Result<std::unique_ptr<ApiClient>> connect(const std::string& address);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  Result<ApiReply> call(const std::string& method, const std::string& target,
                        const nlohmann::json& body = nullptr);

 private:
  struct Connection;
  explicit ApiClient(std::unique_ptr<Connection> connection);
  std::unique_ptr<Connection> connection_;
};

// The Unix socket path `address` names (as for connect()).
Result<std::string> console_socket_path(const std::string& address);

// laminad's default socket for the calling user (same rule as laminad's --socket default).
std::string default_laminad_socket();

}  // namespace lamina::cli
