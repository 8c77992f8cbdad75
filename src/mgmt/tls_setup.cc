#include "mgmt/tls_setup.h"

#include <fmt/format.h>

namespace lamina::mgmt {

namespace ssl = boost::asio::ssl;

namespace {

Result<void> named_error(std::string_view source, const std::filesystem::path& path,
                         const boost::system::error_code& error) {
  return fail(ErrorCode::kInvalidArgument, fmt::format("{} {}: {}", source, path.string(), error.message()));
}

}  // namespace

void require_modern_tls(ssl::context& context) {
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                      ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
}

Result<void> load_tls_identity(ssl::context& context, const std::filesystem::path& certificate,
                               std::string_view certificate_source, const std::filesystem::path& key,
                               std::string_view key_source) {
  boost::system::error_code error;
  context.use_certificate_chain_file(certificate.string(), error);
  if (error) return named_error(certificate_source, certificate, error);
  context.use_private_key_file(key.string(), ssl::context::pem, error);
  if (error) return named_error(key_source, key, error);
  return {};
}

Result<void> load_tls_ca(ssl::context& context, const std::filesystem::path& ca, std::string_view ca_source) {
  boost::system::error_code error;
  context.load_verify_file(ca.string(), error);
  if (error) return named_error(ca_source, ca, error);
  return {};
}

}  // namespace lamina::mgmt
