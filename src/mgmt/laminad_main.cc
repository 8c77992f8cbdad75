// laminad: Lamina's management service. Keeps the VM inventory, starts one sandboxed lamina-vm
// worker per running VM and serves the REST API (api_router.h) on a Unix socket.

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "base/unique_fd.h"
#include "mgmt/api_router.h"
#include "mgmt/http_server.h"
#include "mgmt/vm_service.h"

namespace {

namespace fs = std::filesystem;

std::string environment(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

fs::path default_state_dir() {
  if (::geteuid() == 0) return "/var/lib/lamina";
  if (auto state = environment("XDG_STATE_HOME"); !state.empty()) return fs::path(state) / "lamina";
  return fs::path(environment("HOME")) / ".local/state/lamina";
}

fs::path default_socket() {
  if (::geteuid() == 0) return "/run/lamina/laminad.sock";
  if (auto runtime = environment("XDG_RUNTIME_DIR"); !runtime.empty()) {
    return fs::path(runtime) / "lamina/laminad.sock";
  }
  return default_state_dir() / "laminad.sock";
}

// The folder of this executable: lamina-vm and lamina are built (and installed) beside it.
fs::path own_folder() {
  std::error_code error;
  return fs::read_symlink("/proc/self/exe", error).parent_path();
}

int run(const fs::path& state_dir, const fs::path& socket, const fs::path& worker,
        const std::string& worker_user) {
  // SIGTERM and SIGINT end laminad: blocked before any thread exists (threads inherit the
  // mask) and taken by one waiting thread. A client that went away is an error, not SIGPIPE.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  std::error_code error;
  fs::create_directories(state_dir, error);
  fs::create_directories(socket.parent_path(), error);
  if (error) {
    fmt::print(stderr, "laminad: {}: {}\n", socket.parent_path().string(), error.message());
    return 1;
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
                                       .lamina_program = own_folder() / "lamina"};
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
  auto server = lamina::mgmt::HttpServer::listen(socket, router);
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
  fs::path state_dir = default_state_dir();
  fs::path socket = default_socket();
  fs::path worker = own_folder() / "lamina-vm";
  std::string worker_user = "nobody";
  app.add_option("--state-dir", state_dir, "Inventory and per-VM files")->capture_default_str();
  app.add_option("--socket", socket, "The API's Unix socket")->capture_default_str();
  app.add_option("--worker", worker, "The lamina-vm program")->capture_default_str();
  app.add_option("--worker-user", worker_user,
                 "As root: the unprivileged user workers run as")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  return run(state_dir, socket, worker, worker_user);
}
