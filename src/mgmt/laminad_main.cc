// laminad: Lamina's management service. Keeps the VM inventory, starts one sandboxed lamina-vm
// worker per running VM and serves the REST API (api_router.h) on a Unix socket.

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <expected>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "base/unique_fd.h"
#include "mgmt/api_router.h"
#include "mgmt/default_paths.h"
#include "mgmt/host_port.h"
#include "mgmt/http_server.h"
#include "mgmt/vm_service.h"

namespace {

namespace fs = std::filesystem;

// The folder of this executable: lamina-vm and lamina are built (and installed) beside it.
fs::path own_folder() {
  std::error_code error;
  return fs::read_symlink("/proc/self/exe", error).parent_path();
}

// "HOST:PORT" or "[V6]:PORT".

struct TcpArguments {
  std::string listen;
  fs::path certificate, key, client_ca, token_file;
};

// The TCP endpoint's settings, or an exit status for a usage error.
std::expected<std::optional<lamina::mgmt::TcpListenOptions>, int> tcp_options(
    const TcpArguments& arguments) {
  if (arguments.listen.empty()) {
    if (!arguments.certificate.empty() || !arguments.key.empty() || !arguments.client_ca.empty() ||
        !arguments.token_file.empty()) {
      fmt::print(stderr, "laminad: --tls-* and --token-file go with --listen\n");
      return std::unexpected(2);
    }
    return std::nullopt;
  }
  auto endpoint = lamina::mgmt::parse_host_port(arguments.listen);
  if (!endpoint) {
    fmt::print(stderr, "laminad: --listen {}: use HOST:PORT\n", arguments.listen);
    return std::unexpected(2);
  }
  if (arguments.certificate.empty() || arguments.key.empty()) {
    fmt::print(stderr, "laminad: --listen needs --tls-cert and --tls-key (TCP is TLS only)\n");
    return std::unexpected(2);
  }
  lamina::mgmt::TcpListenOptions options{.host = endpoint->first,
                                         .port = endpoint->second,
                                         .certificate = arguments.certificate,
                                         .key = arguments.key,
                                         .client_ca = arguments.client_ca,
                                         .token = {}};
  if (!arguments.token_file.empty()) {
    std::ifstream file(arguments.token_file);
    std::getline(file, options.token);
    if (options.token.size() < 16) {
      fmt::print(stderr, "laminad: --token-file {}: needs a token of at least 16 characters\n",
                 arguments.token_file.string());
      return std::unexpected(2);
    }
  }
  return options;
}

int run(const fs::path& state_dir, const fs::path& socket, const fs::path& worker,
        const std::string& worker_user, const std::optional<lamina::mgmt::TcpListenOptions>& tcp) {
  // SIGTERM and SIGINT end laminad: blocked before any thread exists (threads inherit the
  // mask) and taken by one waiting thread. A client that went away is an error, not SIGPIPE.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  std::error_code error;
  for (const fs::path& folder : {state_dir, socket.parent_path()}) {
    if (folder.empty()) continue;
    fs::create_directories(folder, error);
    if (error) {
      fmt::print(stderr, "laminad: {}: {}\n", folder.string(), error.message());
      return 1;
    }
  }
  fs::permissions(state_dir, fs::perms::owner_all, error);
  // One laminad per state folder.
  lamina::UniqueFd lock(::open((state_dir / "laminad.lock").c_str(),
                               O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    fmt::print(stderr, "laminad: another laminad uses {}\n", state_dir.string());
    return 1;
  }
  lamina::mgmt::ServiceOptions options{.state_dir = state_dir,
                                       .worker_program = worker,
                                       .lamina_program = own_folder() / "lamina",
                                       .migration_tls = std::nullopt};
  // The TLS endpoint's identity is also this laminad's identity as a migration source, and
  // its CA the one that signed the laminads it sends VMs to.
  if (tcp && !tcp->client_ca.empty()) {
    options.migration_tls =
        lamina::mgmt::MigrationTls{tcp->certificate, tcp->key, tcp->client_ca};
  }
  if (::geteuid() == 0) {
    const passwd* user = ::getpwnam(worker_user.c_str());
    if (!user || user->pw_uid == 0) {
      fmt::print(stderr, "laminad: --worker-user {}: no such unprivileged user\n", worker_user);
      return 2;
    }
    options.worker_uid = user->pw_uid;
    options.worker_gid = user->pw_gid;
  }
  auto service = lamina::mgmt::VmService::open(options);
  if (!service) {
    fmt::print(stderr, "laminad: {}\n", service.error().message());
    return 1;
  }
  lamina::mgmt::ApiRouter router(**service);
  auto server = lamina::mgmt::HttpServer::listen(socket, router, tcp);
  if (!server) {
    fmt::print(stderr, "laminad: {}\n", server.error().message());
    return 1;
  }
  std::jthread waiter([&] {
    int number = 0;
    sigwait(&signals, &number);
    (*server)->stop();
  });
  (*service)->start_autostart_vms();
  fmt::print(stderr, "laminad: serving {} (state in {})\n", socket.string(), state_dir.string());
  if (tcp)
    fmt::print(stderr, "laminad: serving https on {} port {}\n", tcp->host, (*server)->tcp_port());
  (*server)->serve();
  // Running VMs keep running: their workers are not tied to laminad. Connection threads may
  // still be waiting on long polls, so leave without destroying what they use.
  (*service)->detach_all();
  fmt::print(stderr, "laminad: stopped\n");
  std::fflush(stderr);
  std::_Exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "laminad: Lamina's management service. Keeps the VM inventory (SQLite), runs one "
      "sandboxed lamina-vm worker per running VM and serves the REST API on a Unix socket "
      "(`lamina vm` talks to it)."};
  fs::path state_dir = lamina::mgmt::default_state_dir();
  fs::path socket = lamina::mgmt::default_socket();
  fs::path worker = own_folder() / "lamina-vm";
  std::string worker_user = "nobody";
  TcpArguments tcp;
  app.add_option("--state-dir", state_dir, "Inventory and per-VM files")->capture_default_str();
  app.add_option("--socket", socket, "The API's Unix socket")->capture_default_str();
  app.add_option("--worker", worker, "The lamina-vm program")->capture_default_str();
  app.add_option("--worker-user", worker_user, "As root: the unprivileged user workers run as")
      ->capture_default_str();
  app.add_option("--listen", tcp.listen,
                 "Also serve the API over TLS on HOST:PORT (needs --tls-cert, --tls-key and "
                 "client authentication: --tls-ca and/or --token-file)");
  app.add_option("--tls-cert", tcp.certificate, "PEM certificate chain for --listen");
  app.add_option("--tls-key", tcp.key, "PEM private key for --listen");
  app.add_option("--tls-ca", tcp.client_ca,
                 "PEM CA: clients on --listen must present a certificate it signed");
  app.add_option("--token-file", tcp.token_file,
                 "A file whose first line is the bearer token clients on --listen must send");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  auto listen = tcp_options(tcp);
  if (!listen) return listen.error();
  return run(state_dir, socket, worker, worker_user, *listen);
}
