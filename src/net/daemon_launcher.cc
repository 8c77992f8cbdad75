#include "net/daemon_launcher.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

#include "base/unique_fd.h"

namespace lamina::net {

namespace {

constexpr int kReadyFd = 3;

// The grandchild, between fork and exec: async-signal-safe calls only.
[[noreturn]] void exec_daemon(int ready_write, const char* log_path, const char* program,
                              char* const argv[]) {
  int null = ::open("/dev/null", O_RDWR);
  if (null >= 0) {
    ::dup2(null, STDIN_FILENO);
    ::dup2(null, STDOUT_FILENO);
  }
  int log = ::open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
  if (log >= 0) ::dup2(log, STDERR_FILENO);
  if (ready_write != kReadyFd) {
    ::dup2(ready_write, kReadyFd);
  } else {
    ::fcntl(kReadyFd, F_SETFD, 0);
  }
  // The caller's descriptors (disk images with their locks, sockets) must not live on in a
  // daemon that outlives it.
  ::close_range(kReadyFd + 1, UINT_MAX, CLOSE_RANGE_CLOEXEC);
  // Nor its folder (which would keep a mount busy), its umask, or what it did with signals
  // (ignored dispositions and the blocked mask survive exec).
  [[maybe_unused]] int ignored = ::chdir("/");
  ::umask(077);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int signal_number : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) {
    ::sigaction(signal_number, &default_action, nullptr);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execv(program, argv);
  constexpr char kMessage[] = "error: cannot run the lamina program for the switch daemon\n";
  [[maybe_unused]] ssize_t written = ::write(kReadyFd, kMessage, sizeof(kMessage) - 1);
  ::_exit(127);
}

}  // namespace

Result<LaunchOutcome> launch_switch_daemon(const SwitchPaths& paths, const DaemonProgram& daemon,
                                           std::chrono::milliseconds timeout) {
  // Everything the child needs is prepared before fork.
  std::vector<std::string> words{
      daemon.program.string(), "switch", "serve", paths.name, "--ready-fd",
      std::to_string(kReadyFd)};
  words.insert(words.end(), daemon.arguments.begin(), daemon.arguments.end());
  std::vector<char*> argv;
  for (auto& word : words) argv.push_back(word.data());
  argv.push_back(nullptr);
  std::string log_path = paths.log.string();

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return fail(ErrorCode::kIo, fmt::format("pipe: {}", std::strerror(errno)));
  }
  UniqueFd ready_read(pipe_fds[0]);
  UniqueFd ready_write(pipe_fds[1]);

  pid_t child = ::fork();
  if (child < 0) return fail(ErrorCode::kIo, fmt::format("fork: {}", std::strerror(errno)));
  if (child == 0) {
    // Double fork: the daemon is not our child, so nobody has to reap it, and its own session
    // keeps it away from the terminal's signals (Ctrl-C in a VM's console).
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
    exec_daemon(ready_write.get(), log_path.c_str(), argv[0], argv.data());
  }
  ready_write.reset();
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }

  std::string report;
  bool closed = false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd polled{ready_read.get(), POLLIN, 0};
    int ready = ::poll(&polled, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;
    char chunk[512];
    ssize_t got = ::read(ready_read.get(), chunk, sizeof(chunk));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      closed = true;
      break;
    }
    report.append(chunk, static_cast<size_t>(got));
    if (report.size() > 4096 || report.find('\n') != std::string::npos) break;
  }
  std::string_view line(report);
  line = line.substr(0, line.find('\n'));
  if (line == "ready") return LaunchOutcome::kReady;
  if (line == "busy") return LaunchOutcome::kBusy;
  if (line.starts_with("error: ")) {
    return fail(ErrorCode::kIo,
                fmt::format("the switch daemon for {} failed: {}", paths.name, line.substr(7)));
  }
  if (closed) {
    return fail(ErrorCode::kIo, fmt::format("the switch daemon for {} exited without starting "
                                            "(its log: {})",
                                            paths.name, paths.log.string()));
  }
  return fail(ErrorCode::kIo,
              fmt::format("the switch daemon for {} did not report ready within {} ms (its "
                          "log: {})",
                          paths.name, timeout.count(), paths.log.string()));
}

void report_to_launcher(int ready_fd, std::string_view line) {
  if (ready_fd < 0) return;
  std::string text = std::string(line) + "\n";
  [[maybe_unused]] ssize_t written = ::write(ready_fd, text.data(), text.size());
  ::close(ready_fd);
}

}  // namespace lamina::net
