#pragma once
// ApiClient: `lamina vm`'s connection to laminad: HTTP/1.1 (Boost.Beast), JSON in and out,
// over laminad's Unix socket or over TLS to its --listen endpoint. The address comes from
// --connect (unix:PATH or https://HOST:PORT), else LAMINA_CONNECT, else laminad's default
// socket for this user (mgmt/default_paths.h). TLS settings come from the environment:
// LAMINA_TLS_CA (the CA that signed laminad's certificate; else the system's), LAMINA_TLS_CERT and
// LAMINA_TLS_KEY (a client certificate), LAMINA_TOKEN (a bearer token).
//
// Ownership: owns its connection. Thread-safety: one thread.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace lamina::cli {

struct ApiReply {
  int status = 0;
  nlohmann::json body;  // the parsed JSON body (or discarded for text bodies)
  std::string text;     // the raw body
};

// Where laminad is: a Unix socket path, or a TLS endpoint.
struct UnixAddress {
  std::string path;
};
struct TlsAddress {
  std::string host;
  std::string port;
};
using ApiAddress = std::variant<UnixAddress, TlsAddress>;

// Parses `address` as given to --connect ("" for LAMINA_CONNECT or the default).
Result<ApiAddress> resolve_api_address(const std::string& address);

class ApiClient {
 public:
  // Connects at once: kNotFound with a hint to start laminad when nothing listens.
  static Result<std::unique_ptr<ApiClient>> connect(const std::string& address);
  ~ApiClient();
  ApiClient(const ApiClient&) = delete;
  ApiClient& operator=(const ApiClient&) = delete;

  Result<ApiReply> call(const std::string& method, const std::string& target,
                        const nlohmann::json& body = nullptr);
  // GETs a body that keeps coming (the event stream): each piece goes to `on_text` as it
  // arrives, until it returns false (the reply so far) or the stream ends (kIo). A refused
  // request returns its reply (status and body) without calling `on_text`.
  Result<ApiReply> follow(const std::string& target,
                          const std::function<bool(std::string_view)>& on_text);

 private:
  struct Connection;
  explicit ApiClient(std::unique_ptr<Connection> connection);
  std::unique_ptr<Connection> connection_;
};

}  // namespace lamina::cli
