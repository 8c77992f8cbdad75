#pragma once
// VmService: what laminad does with VMs, independent of HTTP: the inventory (definitions), the
// running workers (one WorkerProcess per running VM) and the rules between them: a running VM
// cannot be started, updated or deleted (409); a request that fails changes nothing. It records
// every state change as an event (Inventory) and wakes event watchers.
//
// Ownership: owns the inventory and the workers. Thread-safety: every public call may come from
// any HTTP connection thread; one mutex guards the running set, the inventory has its own.

#include <condition_variable>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/retrying_worker.h"
#include "machine/vm_config.h"
#include "mgmt/console_hub.h"
#include "mgmt/inventory.h"
#include "mgmt/migration_joins.h"
#include "mgmt/worker_cgroup.h"
#include "mgmt/worker_process.h"
#include "migration/phase_times.h"
#include "net/mac_address.h"

namespace lamina::mgmt {

// A VM's worker process launched ahead of its start (VmService::launch_worker), with its memory
// cgroup; start() takes the process. One never started is ended when this goes.
struct LaunchedWorker {
  std::unique_ptr<WorkerProcess> process;
  std::optional<WorkerCgroup> cgroup;
  std::string memory_cgroup;  // for the "started" event: the cgroup's path, or why there is none
  LaunchedWorker() = default;
  LaunchedWorker(LaunchedWorker&&) = default;
  LaunchedWorker& operator=(LaunchedWorker&&) = default;
  ~LaunchedWorker() {
    if (process) process->discard();
  }
};

// An API-level failure: the HTTP status, the request field at fault (may be empty) and a
// message a user can act on.
struct ServiceError {
  int status = 400;
  std::string field;
  std::string message;

  // The usual answers, one place for their statuses and wording.
  static ServiceError bad_request(std::string field, std::string message) {
    return {400, std::move(field), std::move(message)};
  }
  static ServiceError no_vm(const std::string& name) {
    return {404, "name", "no VM named " + name};
  }
  static ServiceError conflict(std::string message) { return {409, "", std::move(message)}; }
  static ServiceError internal(std::string message) { return {500, "", std::move(message)}; }
  static ServiceError internal(const Error& error) { return internal(error.message()); }
};
template <typename T>
using ServiceResult = std::expected<T, ServiceError>;

// laminad's identity as a live migration's source: its TLS certificate and key (the
// destination's --tls-ca must have signed them) and the CA that signed destinations'
// certificates. laminad's own --tls-cert, --tls-key and --tls-ca.
struct MigrationTls {
  std::filesystem::path certificate;
  std::filesystem::path key;
  std::filesystem::path ca;
};

struct ServiceOptions {
  std::filesystem::path state_dir;
  std::filesystem::path worker_program;  // lamina-vm
  std::filesystem::path lamina_program;  // lamina (virtual switch daemons)
  uid_t worker_uid = 65534;
  gid_t worker_gid = 65534;
  std::optional<MigrationTls> migration_tls = std::nullopt;  // none: cannot send VMs away
};

struct StopOptions {
  bool force = false;                        // skip the ACPI power button
  std::chrono::milliseconds timeout{30000};  // for the guest to power off before forcing
};

class VmService {
 public:
  static Result<std::unique_ptr<VmService>> open(const ServiceOptions& options);
  ~VmService();
  VmService(const VmService&) = delete;
  VmService& operator=(const VmService&) = delete;

  // body: {"name": N, "autostart": bool, "on_crash": "stay|restart", "definition": {...}}
  // `checks`: kNone for an incoming migration, whose disks the source still holds (locked);
  // they are opened, and checked, when the VM starts here.
  ServiceResult<nlohmann::json> create(const nlohmann::json& body,
                                       machine::HostChecks checks = machine::HostChecks::kHost);
  ServiceResult<nlohmann::json> list();
  ServiceResult<nlohmann::json> get(const std::string& name);
  // body: any of "autostart", "on_crash", "definition" (replaces it whole); stopped VMs only.
  ServiceResult<nlohmann::json> update(const std::string& name, const nlohmann::json& body);
  ServiceResult<nlohmann::json> remove(const std::string& name, bool with_disks);

  // With restore_fd, the VM continues from a saved machine state (a checkpoint) instead of
  // booting; the caller keeps the descriptor. With `launched` (launch_worker's), that worker
  // gets the VM instead of a new one. With `phases`, where the start's time went is marked
  // there (a migration's switchover reports it).
  ServiceResult<nlohmann::json> start(const std::string& name, int restore_fd = -1,
                                      LaunchedWorker* launched = nullptr,
                                      migration::PhaseTimes* phases = nullptr);
  // Starts the worker process of a defined VM ahead of start() (a live migration's
  // destination does at the offer, so the switchover does not wait for a process to start).
  Result<LaunchedWorker> launch_worker(const std::string& name);
  ServiceResult<nlohmann::json> stop(const std::string& name, const StopOptions& options);
  ServiceResult<nlohmann::json> kill(const std::string& name);
  // "pause", "resume", "reset" (the guest's reset; the VM keeps running).
  ServiceResult<nlohmann::json> control(const std::string& name, std::string_view op);

  // The running VM's console (409 when it is not running or its serial port goes elsewhere).
  ServiceResult<std::shared_ptr<ConsoleHub>> console(const std::string& name);

  // Events with id > after (optionally one VM's); waits up to `wait` for one when none.
  ServiceResult<nlohmann::json> events(int64_t after, const std::string& vm,
                                       std::chrono::milliseconds wait);
  // Prometheus text exposition of every VM.
  std::string metrics();

  // Starts the VMs marked autostart (laminad's startup).
  void start_autostart_vms();
  // Stops listening to workers; running VMs keep running (laminad's shutdown).
  void detach_all();

  // Live migration (vm_migration.cc; protocol in migration/migration_protocol.h). migrate:
  // body {"to": "HOST:PORT", "storage": "shared"|"copy", "destination_dir": DIR (copy only),
  // "max_downtime_ms": N, "destination_token": the destination's bearer token when its
  // --listen wants one besides the certificate (never recorded)}; the VM must run; with copy its disks travel too (the source's
  // images stay where they are);
  // answers 202 at once and migrates in the background, reporting "migration" events
  // (progress, then "completed" and the VM's "migrated" with its removal here, or "failed"
  // with the VM running on). The destination side is IncomingMigration.
  ServiceResult<nlohmann::json> migrate(const std::string& name, const nlohmann::json& body);
  // An incoming migration's definition is marked until its VM starts here: a laminad that
  // stops before that drops the definition when it starts again (IncomingMigration), and
  // deletes the images the migration was creating here (--storage copy).
  void mark_incoming(const std::string& name, bool incoming,
                     const std::vector<std::string>& created_disks = {});
  // The incoming migrations that further connections (lanes) may join.
  MigrationJoins& migration_joins() { return migration_joins_; }
  // Records an event (for IncomingMigration).
  void record_event(const std::string& vm, const std::string& kind, const nlohmann::json& detail) {
    log_event(vm, kind, detail);
  }
  // Hotplug (vm_devices.cc). A VM's devices are its definition's disks ("disk0", "disk1", ...)
  // and network cards ("net0", ...) in definition order; get() lists them under "devices".
  // attach: body {"disk": "PATH[,readonly]..."} or {"net": "switch:NAME[,mac=M]"}; a running
  // VM gets the device at once (ACPI PCI hotplug; laminad opens the image or port for the
  // worker), a stopped one at its next start; the definition follows either way. detach:
  // DEVICE is an id or a disk's path; a running guest is asked to release it and waited for
  // up to `timeout` (409 naming the timeout when it does not: the device stays), then the
  // image is flushed and closed. Refusals change nothing: a bad or unknown device (400/404),
  // an image that is in use (422), a paused VM on detach (409).
  ServiceResult<nlohmann::json> attach(const std::string& name, const nlohmann::json& body);
  ServiceResult<nlohmann::json> detach(const std::string& name, const std::string& device,
                                       std::chrono::milliseconds timeout);
  // resize: body {"cpus": N}: a running VM (created with max_cpus) gets or loses vCPUs at
  // once (ACPI CPU hotplug: the guest starts the new ones itself, and offlines and ejects the
  // ones that go, each waited for up to `timeout`), a stopped one at its next start; the
  // definition follows. Refused: more than max_cpus, no headroom, a paused VM (409).
  ServiceResult<nlohmann::json> resize(const std::string& name, const nlohmann::json& body);
  // The running VM's screen as a PNG (its VGA adapter's current picture): 404 no such VM, 409
  // not running, no VGA adapter or nothing on the screen to draw.
  ServiceResult<std::string> screenshot(const std::string& name);
  // Where the running VM's VNC server listens (its definition's display), for laminad's
  // WebSocket relay (GET /v1/vms/NAME/vnc): 404 no such VM, 409 not running or no VNC display.
  ServiceResult<machine::DisplayOption> vnc_display(const std::string& name);
  // [{"id": "disk0", "kind": "disk", "spec": "PATH..."}, ...] of a definition.
  static nlohmann::json devices_of(const nlohmann::json& definition);

  // Checkpoints (vm_checkpoints.cc). checkpoint: body {"name": CP} (optional; a time-based
  // name without it); a running VM is saved, its disks get differencing children, and it runs
  // on from the saved state; a stopped VM's checkpoint holds its disks only. restore: the VM
  // must be stopped; its disks go back to the checkpoint's (new children of the frozen images)
  // and, when the checkpoint saved a running VM, it runs on from there. delete_checkpoint:
  // drops the saved state and merges disk changes into the frozen image where nothing else
  // depends on it (the VM must be stopped for a merge).
  ServiceResult<nlohmann::json> checkpoint(const std::string& name, const nlohmann::json& body);
  ServiceResult<nlohmann::json> checkpoints(const std::string& name);
  ServiceResult<nlohmann::json> restore(const std::string& name, const std::string& checkpoint);
  ServiceResult<nlohmann::json> delete_checkpoint(const std::string& name,
                                                  const std::string& checkpoint);

 private:
  MigrationJoins migration_joins_;
  struct RunningVm {
    std::unique_ptr<WorkerProcess> worker;
    std::shared_ptr<ConsoleHub> console;  // null when the definition sends serial elsewhere
    std::string state = "running";
    std::string started;
    nlohmann::json last_stop;  // the worker's stopped event, when it came
    bool migrating = false;    // a migration runs (one at a time)
    bool migrated = false;     // the worker reported a completed migration: the VM left
  };

  explicit VmService(ServiceOptions options, std::unique_ptr<Inventory> inventory)
      : options_(std::move(options)), inventory_(std::move(inventory)) {}
  void log_event(const std::string& vm, const std::string& kind, const nlohmann::json& detail);
  void on_worker_event(const std::string& name, const nlohmann::json& event);
  void on_worker_exit(const std::string& name, const WorkerExit& exit);
  static constexpr const char* kIncomingMarker = "incoming-migration";
  void drop_unfinished_incoming();
  // The source side's thread: the link to the destination and the relay for the worker.
  Result<LaunchedWorker> launch_worker(const std::string& name, const machine::VmConfig& config);
  void run_migration(std::stop_token stop, std::string name, std::string host, std::string port,
                     nlohmann::json offer, int64_t max_downtime_ms, std::string storage,
                     std::string token);
  nlohmann::json describe(const VmRecord& record);
  std::filesystem::path vm_dir(const std::string& name) const;
  ServiceResult<void> start_switches(const nlohmann::json& definition);
  // The worker of a running VM, or the answer: no such VM (404) or not running (409).
  // `while_locked` runs on its entry under mutex_ (to mark it stopping, say).
  ServiceResult<WorkerProcess*> running_worker(const std::string& name,
                                               const std::function<void(RunningVm&)>& while_locked = {});
  void reap(std::stop_token stop);
  // laminad's start: takes over the workers an earlier laminad left running.
  void adopt_running_workers();
  // A console link for a running worker: the hub, with the worker's end in `worker_end`.
  Result<std::shared_ptr<ConsoleHub>> link_console(const std::string& name, UniqueFd& worker_end,
                                                   bool append);

  const ServiceOptions options_;
  std::unique_ptr<Inventory> inventory_;

  std::mutex mutex_;
  std::condition_variable changed_;  // a worker ended or an event was recorded
  std::map<std::string, RunningVm> running_;
  std::map<std::string, std::string> last_reason_;  // why each stopped VM stopped
  std::vector<std::unique_ptr<WorkerProcess>> finished_;  // destroyed off their own thread
  std::vector<std::shared_ptr<ConsoleHub>> finished_consoles_;
  std::vector<std::string> restart_;                       // on_crash=restart, to start again
  std::jthread reaper_;
  std::mutex checkpoint_mutex_;  // one checkpoint operation at a time (they span worker restarts)
  std::mutex hotplug_mutex_;  // one attach/detach at a time (definition read-modify-write)
  // Outgoing live migrations, one thread per VM that migrated (the last one): stopping one
  // cuts its link and relay, so the worker gives up and its VM runs on. Stopped and joined
  // when laminad stops (detach_all), before anything they use goes.
  std::mutex migration_threads_mutex_;
  std::map<std::string, std::jthread> migration_threads_;

  // Network cards whose backend died (a worker's "net_backend_failed": the switch daemon went
  // away) are reconnected in turn (reconnect_card, vm_devices.cc): the switch restarted and
  // the worker handed a new port, ten tries a second apart; stopped by detach_all.
  Result<void> reconnect_card(const std::string& name, const net::MacAddress& mac);
  // The cards queued or being reconnected ("VM MAC"; mutex_): a worker that repeats its
  // event (a hostile one could) neither queues a card twice nor floods the event log.
  std::set<std::string> reconnecting_;
  static constexpr size_t kMaxReconnecting = 256;
  RetryingWorker reconnector_{10, std::chrono::seconds(1)};
};

// "[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
bool valid_vm_name(std::string_view name);

}  // namespace lamina::mgmt
