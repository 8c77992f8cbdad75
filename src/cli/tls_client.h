#pragma once
// The client side of TLS to laminad's --listen endpoint, shared by `lamina vm`'s API calls and
// its console: a context from the environment (LAMINA_TLS_CA: the CA that signed laminad's
// certificate, else the system's CAs; LAMINA_TLS_CERT and LAMINA_TLS_KEY: a client
// certificate), a TCP connect, and a handshake that verifies laminad's name.
//
// Ownership: TlsClientContext owns the OpenSSL context. Thread-safety: one thread.

#include <memory>
#include <string>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>

#include "base/error.h"

namespace lamina::cli {

class TlsClientContext {
 public:
  static Result<std::unique_ptr<TlsClientContext>> from_environment();
  boost::asio::ssl::context& context() { return context_; }

 private:
  TlsClientContext() = default;
  boost::asio::ssl::context context_{boost::asio::ssl::context::tls_client};
};

// kNotFound when nothing answers at host:port.
Result<void> connect_tcp(boost::asio::ip::tcp::socket& socket, const std::string& host,
                         const std::string& port);
// Verifies the certificate chain and that it names `host`; kIo with OpenSSL's reason.
Result<void> handshake(boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>& stream,
                       const std::string& host);

}  // namespace lamina::cli
