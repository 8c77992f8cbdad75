#include "cli/tls_client.h"

#include "mgmt/tls_setup.h"

#include <openssl/ssl.h>

#include <cstdlib>

#include <boost/asio/connect.hpp>
#include <fmt/format.h>

namespace lamina::cli {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

Result<std::unique_ptr<TlsClientContext>> TlsClientContext::from_environment() {
  std::unique_ptr<TlsClientContext> tls(new TlsClientContext());
  mgmt::require_modern_tls(tls->context_);
  tls->context_.set_verify_mode(ssl::verify_peer);
  if (const std::string ca = environment("LAMINA_TLS_CA"); !ca.empty()) {
    if (auto loaded = mgmt::load_tls_ca(tls->context_, ca, "LAMINA_TLS_CA"); !loaded) return fail(loaded.error());
  } else {
    boost::system::error_code error;
    tls->context_.set_default_verify_paths(error);
  }
  const std::string certificate = environment("LAMINA_TLS_CERT");
  const std::string key = environment("LAMINA_TLS_KEY");
  if (certificate.empty() != key.empty()) {
    return fail(ErrorCode::kInvalidArgument, "LAMINA_TLS_CERT and LAMINA_TLS_KEY go together");
  }
  if (!certificate.empty()) {
    if (auto loaded = mgmt::load_tls_identity(tls->context_, certificate, "LAMINA_TLS_CERT", key, "LAMINA_TLS_KEY");
        !loaded) {
      return fail(loaded.error());
    }
  }
  return tls;
}

Result<void> connect_tcp(asio::ip::tcp::socket& socket, const std::string& host,
                         const std::string& port) {
  boost::system::error_code error;
  asio::ip::tcp::resolver resolver(socket.get_executor());
  const auto endpoints = resolver.resolve(host, port, error);
  if (!error) asio::connect(socket, endpoints, error);
  if (error) {
    return fail(ErrorCode::kNotFound,
                fmt::format("cannot reach laminad at {}:{}: {}", host, port, error.message()));
  }
  return {};
}

Result<void> handshake(ssl::stream<asio::ip::tcp::socket&>& stream, const std::string& host) {
  // SNI, and the certificate must name the host (RFC 6125 rules through OpenSSL).
  SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
  stream.set_verify_callback(ssl::host_name_verification(host));
  boost::system::error_code error;
  stream.handshake(ssl::stream_base::client, error);
  if (error) {
    return fail(ErrorCode::kIo, fmt::format("TLS with laminad at {}: {}", host, error.message()));
  }
  return {};
}

}  // namespace lamina::cli
