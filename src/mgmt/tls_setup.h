#pragma once
// The one TLS setup that laminad's TCP listener, its outgoing migrations and the CLI share:
// TLS 1.2 or newer, a certificate chain with its key, and a CA to verify the peer against.
// Errors name the file by the flag or variable the user gave it with (`--tls-cert`,
// `LAMINA_TLS_CERT`, ...), so the message says what to fix.

#include <boost/asio/ssl/context.hpp>

#include <filesystem>
#include <string_view>

#include "base/error.h"

namespace lamina::mgmt {

// No SSL 2/3, TLS 1.0 or 1.1.
void require_modern_tls(boost::asio::ssl::context& context);

// This end's certificate chain and private key (PEM).
[[nodiscard]] Result<void> load_tls_identity(boost::asio::ssl::context& context,
                                             const std::filesystem::path& certificate,
                                             std::string_view certificate_source,
                                             const std::filesystem::path& key, std::string_view key_source);

// The CA (PEM) the peer's certificate must chain to.
[[nodiscard]] Result<void> load_tls_ca(boost::asio::ssl::context& context, const std::filesystem::path& ca,
                                       std::string_view ca_source);

}  // namespace lamina::mgmt
