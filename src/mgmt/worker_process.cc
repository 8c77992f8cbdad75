#include "mgmt/worker_process.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "base/unix_address.h"
#include "base/wakeup_event.h"
#include "worker/control_protocol.h"

extern char** environ;

namespace lamina::mgmt {
namespace {

constexpr auto kHelloTimeout = std::chrono::seconds(10);
// Opening images and connecting network ports happen before the worker answers "start".
constexpr auto kStartTimeout = std::chrono::seconds(60);
// Descriptors the child arranges as 0, 1, 2 and 3 are first moved at or above this, so no
// dup2 in the child is a no-op that would keep close-on-exec.
constexpr int kHighFd = 100;

Error system_error(std::string_view what) {
  return Error(ErrorCode::kIo, fmt::format("{}: {}", what, std::strerror(errno)));
}

Result<UniqueFd> high_copy(int fd) {
  const int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, kHighFd);
  if (copy < 0) return fail(system_error("fcntl F_DUPFD"));
  return UniqueFd(copy);
}

Result<void> write_file(const std::string& path, std::string_view text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return fail(system_error(path));
  }
  return {};
}

}  // namespace

std::string WorkerExit::describe() const {
  if (!signaled && code < 0) {
    return "ended without a stop report (killed or crashed; an earlier laminad started it, so "
           "its exit status is unknown)";
  }
  if (!signaled) return fmt::format("exited with status {}", code);
  const char* name = ::sigabbrev_np(code);
  return fmt::format("killed by signal SIG{}", name ? name : std::to_string(code).c_str());
}

WorkerProcess::WorkerProcess(pid_t pid, UniqueFd pidfd, MessageChannel channel,
                             EventCallback on_event, ExitCallback on_exit)
    : pid_(pid),
      pidfd_(std::move(pidfd)),
      channel_(std::move(channel)),
      on_event_(std::move(on_event)),
      on_exit_(std::move(on_exit)) {}

WorkerProcess::~WorkerProcess() {
  if (reader_.joinable()) {
    reader_.request_stop();
    reader_.join();
  }
}

void WorkerProcess::discard() {
  if (reader_.joinable()) return;  // started: not this function's to end
  kill();
  ::waitpid(pid_, nullptr, 0);
  std::lock_guard lock(mutex_);
  exited_ = true;
}

Result<std::unique_ptr<WorkerProcess>> WorkerProcess::launch(const WorkerSpawnOptions& options,
                                                             EventCallback on_event,
                                                             ExitCallback on_exit) {
  auto channels = MessageChannel::make_pair();
  if (!channels) return fail(channels.error());
  auto& [ours, theirs] = *channels;
  UniqueFd log(::open(options.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log) return fail(system_error(options.log_file.string()));
  UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null) return fail(system_error("/dev/null"));
  auto child_log = high_copy(log.get());
  auto child_null = high_copy(null.get());
  auto child_channel = high_copy(theirs.descriptor());
  if (!child_log || !child_null || !child_channel) return fail(system_error("fcntl"));
  // The worker's listening socket for a restarted laminad, private to laminad's user.
  UniqueFd listener(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!listener) return fail(system_error("socket"));
  auto address = unix_socket_address(options.control_socket);
  if (!address) return fail(address.error());
  const std::string socket_path = options.control_socket.string();
  ::unlink(socket_path.c_str());
  const mode_t previous_umask = ::umask(077);
  const int bound =
      ::bind(listener.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(*address));
  ::umask(previous_umask);
  // The worker calls listen() itself: a client's SO_PEERCRED names the process that did.
  if (bound != 0) return fail(system_error(socket_path));
  auto child_listener = high_copy(listener.get());
  if (!child_listener) return fail(child_listener.error());
  int sync[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return fail(system_error("pipe"));
  UniqueFd sync_read(sync[0]);
  UniqueFd sync_write(sync[1]);

  const bool root = ::geteuid() == 0;
  std::vector<std::string> arguments = {options.program.string(), "--control-fd", "3",
                                        "--listen-fd", "4"};
  if (root) {
    arguments.push_back("--drop-to");
    arguments.push_back(fmt::format("{}:{}", options.worker_uid, options.worker_gid));
  }
  if (options.address_space_limit != 0) {
    arguments.push_back("--address-space-limit");
    arguments.push_back(std::to_string(options.address_space_limit));
  }
  std::vector<char*> argv;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);

  // A new PID namespace needs CAP_SYS_ADMIN; without root it comes with a new user namespace,
  // whose uid 0 laminad maps to its own uid below.
  int pidfd = -1;
  clone_args args{};
  args.flags = CLONE_PIDFD | CLONE_NEWPID | (root ? 0 : CLONE_NEWUSER);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfd);
  args.exit_signal = SIGCHLD;
  const long pid = ::syscall(SYS_clone3, &args, sizeof(args));
  if (pid < 0) return fail(system_error("starting the worker (clone3)"));
  if (pid == 0) {
    // The child of a threaded process: only async-signal-safe calls until execve.
    char go = 0;
    if (::read(sync_read.get(), &go, 1) != 1) ::_exit(126);
    ::dup2(child_null->get(), 0);
    ::dup2(child_log->get(), 1);
    ::dup2(child_log->get(), 2);
    ::dup2(child_channel->get(), 3);
    ::dup2(child_listener->get(), 4);
    ::syscall(SYS_close_range, 5, ~0U, 0);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  UniqueFd owned_pidfd(pidfd);
  // Only the child keeps its ends: a worker that dies closes the channel, which ends our wait.
  sync_read.reset();
  theirs.release().reset();
  child_channel->reset();
  child_log->reset();
  child_null->reset();
  child_listener->reset();
  listener.reset();
  if (!root) {
    const std::string proc = fmt::format("/proc/{}/", pid);
    Result<void> mapped = write_file(proc + "uid_map", fmt::format("0 {} 1\n", ::geteuid()));
    if (mapped) mapped = write_file(proc + "setgroups", "deny");
    if (mapped) mapped = write_file(proc + "gid_map", fmt::format("0 {} 1\n", ::getegid()));
    if (!mapped) {
      ::syscall(SYS_pidfd_send_signal, owned_pidfd.get(), SIGKILL, nullptr, 0);
      ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
      return fail(mapped.error().with_context("mapping the worker's user namespace"));
    }
  }
  if (options.cgroup) {
    if (auto joined = options.cgroup->add(static_cast<pid_t>(pid)); !joined) {
      ::syscall(SYS_pidfd_send_signal, owned_pidfd.get(), SIGKILL, nullptr, 0);
      ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
      return fail(joined.error().with_context("moving the worker into its memory cgroup"));
    }
  }
  const char go = 1;
  if (::write(sync_write.get(), &go, 1) != 1) return fail(system_error("starting the worker"));
  sync_write.reset();

  std::unique_ptr<WorkerProcess> worker(new WorkerProcess(static_cast<pid_t>(pid),
                                                          std::move(owned_pidfd), std::move(ours),
                                                          std::move(on_event), std::move(on_exit)));
  auto hello = worker->channel_.receive(kHelloTimeout);
  if (!hello || !*hello || (*hello)->message.value("event", "") != "hello") {
    worker->discard();
    return fail(ErrorCode::kIo, fmt::format("the worker did not start (see {})",
                                            options.log_file.string()));
  }
  return worker;
}

Result<void> WorkerProcess::start(const WorkerSpawnOptions& options, nlohmann::json* answer) {
  // Until the start answer, the worker is read here; a worker that fails is killed and reaped.
  auto abandon = [&](Error error) -> Result<void> {
    discard();
    return fail(std::move(error));
  };
  nlohmann::json start{{"v", worker::kControlProtocolVersion},
                       {"id", 1},
                       {"op", "start"},
                       {"name", options.vm_name},
                       {"definition", options.definition}};
  std::vector<int> fds;
  if (options.console_fd >= 0) {
    start["console"] = true;
    fds.push_back(options.console_fd);
  }
  if (options.grants) {
    start["grants"] = options.grants->to_json();
    for (int fd : options.grants->descriptors()) fds.push_back(fd);
  }
  if (options.restore_fd >= 0) {
    start["restore"] = true;
    fds.push_back(options.restore_fd);
  }
  if (auto sent = channel_.send(start, fds); !sent) return abandon(sent.error());
  auto received = channel_.receive(kStartTimeout);
  if (!received || !*received || (*received)->message.value("id", 0) != 1) {
    return abandon(Error(ErrorCode::kIo, fmt::format("the worker did not answer (see {})",
                                                     options.log_file.string())));
  }
  const nlohmann::json& reply = (*received)->message;
  if (answer) *answer = reply;
  if (!reply.value("ok", false)) {
    const auto& why = reply.contains("error") && reply["error"].is_string()
                          ? reply["error"].get<std::string>()
                          : std::string("the worker refused to start");
    return abandon(Error(ErrorCode::kInvalidArgument, why));
  }
  reader_ = std::jthread([this](std::stop_token stop) { read_messages(std::move(stop)); });
  return {};
}

Result<std::pair<std::unique_ptr<WorkerProcess>, nlohmann::json>> WorkerProcess::adopt(
    const std::filesystem::path& control_socket, EventCallback on_event, ExitCallback on_exit) {
  UniqueFd socket(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!socket) return fail(system_error("socket"));
  auto address = unix_socket_address(control_socket);
  if (!address) return fail(address.error());
  const std::string path = control_socket.string();
  if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(*address)) !=
      0) {
    return fail(ErrorCode::kNotFound, fmt::format("{}: {}", path, std::strerror(errno)));
  }
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (::getsockopt(socket.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 || peer.pid <= 0) {
    return fail(system_error("SO_PEERCRED"));
  }
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, peer.pid, 0)));
  if (!pidfd) return fail(system_error("pidfd_open"));
  MessageChannel channel{std::move(socket)};
  auto hello = channel.receive(kHelloTimeout);
  if (!hello || !*hello || (*hello)->message.value("event", "") != "hello") {
    return fail(ErrorCode::kIo, fmt::format("{}: no hello from the worker", path));
  }
  nlohmann::json greeting = (*hello)->message;
  std::unique_ptr<WorkerProcess> worker(new WorkerProcess(
      peer.pid, std::move(pidfd), std::move(channel), std::move(on_event), std::move(on_exit)));
  worker->reader_ = std::jthread(
      [raw = worker.get()](std::stop_token stop) { raw->read_messages(std::move(stop)); });
  return std::pair{std::move(worker), std::move(greeting)};
}

bool WorkerProcess::exited() const {
  std::lock_guard lock(mutex_);
  return exited_;
}

void WorkerProcess::kill() {
  if (exited()) return;
  ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

bool WorkerProcess::wait_exit(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return exited_; });
}

Result<nlohmann::json> WorkerProcess::request(std::string_view op,
                                              std::chrono::milliseconds timeout,
                                              std::span<const int> fds) {
  return request(nlohmann::json{{"op", std::string(op)}}, timeout, fds, nullptr);
}

Result<nlohmann::json> WorkerProcess::request(nlohmann::json fields,
                                              std::chrono::milliseconds timeout,
                                              std::span<const int> fds, nlohmann::json* refusal) {
  const std::string op = fields.value("op", "");
  int id;
  {
    std::lock_guard lock(mutex_);
    if (exited_) return fail(ErrorCode::kIo, "the worker has exited");
    id = next_id_++;
  }
  nlohmann::json message = std::move(fields);
  message["v"] = worker::kControlProtocolVersion;
  message["id"] = id;
  // Several requests may be in flight (a detach waiting for the guest while a query is
  // answered): replies are matched by id; only the sends are one at a time.
  {
    std::lock_guard one_send_at_a_time(send_mutex_);
    if (auto sent = channel_.send(message, fds); !sent) return fail(sent.error());
  }
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return replies_.contains(id) || exited_; }) ||
      !replies_.contains(id)) {
    return fail(ErrorCode::kIo, fmt::format("the worker did not answer '{}'", op));
  }
  nlohmann::json reply = std::move(replies_[id]);
  replies_.erase(id);
  if (!reply.value("ok", false)) {
    const std::string why = reply.contains("error") && reply["error"].is_string()
                                ? reply["error"].get<std::string>()
                                : "refused";
    if (refusal != nullptr) *refusal = reply;
    return fail(ErrorCode::kInvalidArgument, fmt::format("the worker refused '{}': {}", op, why));
  }
  return reply;
}

void WorkerProcess::read_messages(std::stop_token stop) {
  // A stop request wakes the poll below, so an idle worker costs laminad no wakeups (without
  // an eventfd, a 200 ms timeout bounds how late the request is noticed).
  auto wakeup = WakeupEvent::create("laminad's worker reader");
  std::stop_callback wake_on_stop(stop, [&wakeup] {
    if (wakeup) wakeup->signal();
  });
  const int wakeup_fd = wakeup ? wakeup->fd() : -1;
  bool channel_open = true;
  while (!stop.stop_requested()) {
    pollfd fds[3] = {{pidfd_.get(), POLLIN, 0},
                     {wakeup_fd, POLLIN, 0},
                     {channel_open ? channel_.descriptor() : -1, POLLIN, 0}};
    const int ready = ::poll(fds, 3, wakeup ? -1 : 200);
    if (ready < 0 && errno != EINTR) break;
    if (channel_open && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      auto received = channel_.receive(std::chrono::milliseconds(0));
      if (!received || !*received) {
        // Closed, or the worker broke the protocol: nothing more is read from it.
        channel_open = false;
      } else {
        const nlohmann::json& message = (*received)->message;
        if (message.contains("id") && message["id"].is_number_integer()) {
          std::lock_guard lock(mutex_);
          // Only replies to requests in flight are kept, so a worker cannot grow the map.
          const int id = message["id"].get<int>();
          if (id > 1 && id < next_id_) replies_[id] = message;
        } else if (message.contains("event") && message["event"].is_string() && on_event_) {
          on_event_(message);
        }
        changed_.notify_all();
        continue;  // drain messages before looking at the exit, so "stopped" comes first
      }
    }
    if ((fds[0].revents & POLLIN) != 0) {
      siginfo_t info{};
      WorkerExit exit{.signaled = false, .code = -1};
      // An adopted worker is not our child: it ended, but its status is not ours to collect.
      if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_.get()), &info,
                   WEXITED) == 0) {
        exit = {.signaled = info.si_code != CLD_EXITED, .code = info.si_status};
      }
      {
        std::lock_guard lock(mutex_);
        exited_ = true;
      }
      changed_.notify_all();
      if (on_exit_) on_exit_(exit);
      return;
    }
  }
}

}  // namespace lamina::mgmt
