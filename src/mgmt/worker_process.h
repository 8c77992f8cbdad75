#pragma once
// WorkerProcess: laminad's handle on one running lamina-vm. launch() starts the worker in a new
// PID namespace (and, when laminad is not root, a new user namespace mapping the worker's root
// to laminad's own uid) and hands it the control channel; start() sends the start request and
// waits for the answer, by which time the worker has opened everything its definition names
// and closed its sandbox. Afterwards a reader thread delivers the worker's replies to request() and its
// events to the callback; when the worker's process ends, on_exit gets how it ended.
//
// A worker is untrusted: its messages are bounded (MessageChannel), checked for shape, and a
// reply that never comes times out.
//
// Ownership: owns the pidfd, the channel and the reader thread; destroying a WorkerProcess whose
// worker still runs leaves the VM running (it is not tied to laminad's life) and only stops
// listening. Thread-safety: request() from any thread, several in flight at once (the worker
// answers hotplug requests when the guest has acted, everything else at once); callbacks run
// on the reader thread.

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <span>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/granted_files.h"
#include "base/message_channel.h"
#include "base/unique_fd.h"
#include "mgmt/worker_cgroup.h"

namespace lamina::mgmt {

struct WorkerSpawnOptions {
  std::filesystem::path program;  // lamina-vm
  std::string vm_name;
  nlohmann::json definition;
  std::filesystem::path log_file;  // the worker's stderr (appended)
  // When laminad runs as root: the unprivileged ids the worker becomes.
  uid_t worker_uid = 65534;
  gid_t worker_gid = 65534;
  uint64_t address_space_limit = 0;
  // The worker's end of the serial console link (ConsoleHub), or -1 for none; sent with the
  // start request, still owned by the caller.
  int console_fd = -1;
  // Where the worker listens for a restarted laminad (bound here, handed to the worker).
  std::filesystem::path control_socket;
  // Everything the VM uses on the host, opened by laminad (machine/host_grants.h); sent with
  // the start request, still owned by the caller.
  const GrantedFiles* grants = nullptr;
  // The memory cgroup the worker starts in (joined before it runs a line of its own), if any.
  const WorkerCgroup* cgroup = nullptr;
  // A machine state file the VM continues from (a checkpoint), or -1 to boot; sent with the
  // start request, still owned by the caller.
  int restore_fd = -1;
};

// How a worker process ended.
struct WorkerExit {
  bool signaled = false;
  int code = 0;  // exit status, or the signal number when signaled
  std::string describe() const;
};

class WorkerProcess {
 public:
  using EventCallback = std::function<void(const nlohmann::json& event)>;
  using ExitCallback = std::function<void(const WorkerExit& exit)>;

  // Two steps, so a VM can start as soon as it may (a live migration's destination launches
  // its worker when the offer comes): launch() starts the process (uses program, log_file, the
  // worker ids, address_space_limit, control_socket and cgroup) and waits for its hello;
  // start() sends it the VM (vm_name, definition, console, grants, restore) and waits for its
  // answer, whose error is the worker's own when it refused the definition or could not open
  // something (kInvalidArgument / kNotFound / kIo as it said). A launched worker that is never
  // started is ended by discard(). `answer`, when given, gets the worker's answer.
  static Result<std::unique_ptr<WorkerProcess>> launch(const WorkerSpawnOptions& options,
                                                       EventCallback on_event,
                                                       ExitCallback on_exit);
  [[nodiscard]] Result<void> start(const WorkerSpawnOptions& options,
                                   nlohmann::json* answer = nullptr);
  void discard();
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  // Re-adopts a worker a previous laminad started, through its control socket. The peer's pid
  // comes from the kernel (SO_PEERCRED), not from what the worker says. Returns the worker and
  // its hello (its "state"); kNotFound when nobody listens there any more.
  static Result<std::pair<std::unique_ptr<WorkerProcess>, nlohmann::json>> adopt(
      const std::filesystem::path& control_socket, EventCallback on_event, ExitCallback on_exit);

  pid_t pid() const { return pid_; }
  bool exited() const;
  // Sends {"op": op} and waits for the reply; kIo when the worker is gone or did not answer.
  Result<nlohmann::json> request(std::string_view op,
                                 std::chrono::milliseconds timeout = std::chrono::seconds(5),
                                 std::span<const int> fds = {});
  // The same with the request's other fields in `fields` (an object; its "op" names it). A
  // refusal keeps the reply: kInvalidArgument's message is the worker's "error", and
  // `refusal`, when given, receives the whole reply.
  Result<nlohmann::json> request(nlohmann::json fields, std::chrono::milliseconds timeout,
                                 std::span<const int> fds, nlohmann::json* refusal);
  // SIGKILL through the pidfd (no-op once it has exited).
  void kill();
  // Waits until the process has ended (or the timeout passed); true when it has.
  bool wait_exit(std::chrono::milliseconds timeout);

 private:
  WorkerProcess(pid_t pid, UniqueFd pidfd, MessageChannel channel, EventCallback on_event,
                ExitCallback on_exit);
  void read_messages(std::stop_token stop);

  pid_t pid_;
  UniqueFd pidfd_;
  MessageChannel channel_;
  EventCallback on_event_;
  ExitCallback on_exit_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::map<int, nlohmann::json> replies_;
  int next_id_ = 2;  // 1 was the start request
  bool exited_ = false;
  std::mutex send_mutex_;  // one message (with its descriptors) on the channel at a time
  std::jthread reader_;
};

}  // namespace lamina::mgmt
