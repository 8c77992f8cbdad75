#include "mgmt/vm_service.h"

#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "machine/host_grants.h"
#include "machine/vm_definition.h"
#include "net/daemon_launcher.h"
#include "net/switch_paths.h"

namespace lamina::mgmt {
namespace {


std::string random_uuid() {
  std::array<uint8_t, 16> bytes{};
  if (::getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    bytes.fill(0);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x40;  // RFC 4122 version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80;  // variant 1
  std::string text;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text += '-';
    text += fmt::format("{:02x}", bytes[i]);
  }
  return text;
}

// The field a definition error names: "--console-port: ..." (lamina run's option names, which
// the definition shares) -> "definition.console_port"; "cpus: ..." -> "definition.cpus".
ServiceError definition_error(const Error& error) {
  const std::string& message = error.message();
  std::string field = "definition";
  if (message.starts_with("--")) {
    std::string name = message.substr(2, message.find_first_of(" :") - 2);
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "disk" || name == "net") name += "s";
    field += "." + name;
  } else if (const size_t colon = message.find(':');
             colon != std::string::npos && message.find(' ') > colon) {
    field += "." + message.substr(0, colon);
  }
  return ServiceError::bad_request(field, message);
}

ServiceResult<void> check_policy(const nlohmann::json& body, VmRecord& record,
                                 machine::HostChecks checks = machine::HostChecks::kHost) {
  if (body.contains("autostart")) {
    if (!body["autostart"].is_boolean()) return std::unexpected(ServiceError::bad_request("autostart", "must be true or false"));
    record.autostart = body["autostart"].get<bool>();
  }
  if (body.contains("on_crash")) {
    const auto& value = body["on_crash"];
    if (!value.is_string() || (value != "stay" && value != "restart")) {
      return std::unexpected(ServiceError::bad_request("on_crash", "must be \"stay\" or \"restart\""));
    }
    record.on_crash = value.get<std::string>();
  }
  if (body.contains("definition")) {
    auto config = machine::vm_config_from_definition(body["definition"], checks);
    if (!config) return std::unexpected(definition_error(config.error()));
    record.definition = body["definition"];
    // A card given without a MAC keeps the one made for it now: every start (and the grants
    // laminad opens for it) then agrees on it, and the guest sees the same card each boot.
    if (record.definition.contains("nets") && record.definition["nets"].is_array()) {
      auto& nets = record.definition["nets"];
      for (size_t index = 0; index < nets.size() && index < config->networks.size(); ++index) {
        if (nets[index].is_string() && nets[index].get<std::string>().find("mac=") == std::string::npos) {
          nets[index] = nets[index].get<std::string>() + ",mac=" + config->networks[index].mac.to_string();
        }
      }
    }
  }
  return {};
}

ServiceResult<void> check_fields(const nlohmann::json& body,
                                 std::initializer_list<std::string_view> allowed) {
  if (!body.is_object()) return std::unexpected(ServiceError::bad_request("", "the body must be a JSON object"));
  for (const auto& [key, value] : body.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return std::unexpected(ServiceError::bad_request(key, "unknown field"));
    }
  }
  return {};
}

// The worker's own report of the syscall its filter refused (sandbox.cc writes one line to its
// log before dying of SIGSYS); only the log's last 4 KiB are read.
std::string forbidden_syscall(const std::filesystem::path& log) {
  std::ifstream file(log, std::ios::binary);
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  file.seekg(std::max<std::streamoff>(0, size - 4096));
  std::string line;
  std::string found = "a forbidden syscall";
  constexpr std::string_view kMarker = "lamina-vm: forbidden syscall ";
  while (std::getline(file, line)) {
    if (line.starts_with(kMarker) && line.size() < 100) {
      found = "forbidden syscall " + line.substr(kMarker.size());
    }
  }
  return found;
}

// The worker's RLIMIT_AS: guest RAM plus room for the VMM itself (its heap arenas, thread
// stacks and device buffers; about 250 MiB of address space with one vCPU), so a worker that
// runs away is stopped by the kernel instead of the host.
uint64_t address_space_limit(const machine::VmConfig& config) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  // Every possible vCPU has its thread from the start (CPU hotplug only marks it present).
  return std::max(config.memory_bytes, config.max_memory_bytes) + 1024 * kMiB +
         128 * kMiB * std::max(config.cpus, config.max_cpus);
}

// The worker's memory cgroup limit: guest RAM plus what the worker itself uses (about 7 MiB,
// bench/laminad_bench.sh), its page cache for image I/O and thread stacks, with a wide margin.
uint64_t memory_cgroup_limit(const machine::VmConfig& config) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  return std::max(config.memory_bytes, config.max_memory_bytes) + 256 * kMiB +
         32 * kMiB * std::max(config.cpus, config.max_cpus);
}

}  // namespace

bool valid_vm_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

Result<std::unique_ptr<VmService>> VmService::open(const ServiceOptions& options) {
  std::error_code error;
  std::filesystem::create_directories(options.state_dir / "vms", error);
  if (error) {
    return fail(ErrorCode::kIo, fmt::format("{}: {}", options.state_dir.string(), error.message()));
  }
  auto inventory = Inventory::open(options.state_dir / "inventory.db");
  if (!inventory) return fail(inventory.error());
  std::unique_ptr<VmService> service(new VmService(options, std::move(*inventory)));
  service->drop_unfinished_incoming();
  service->adopt_running_workers();
  service->reaper_ = std::jthread([raw = service.get()](std::stop_token stop) { raw->reap(stop); });
  return service;
}

VmService::~VmService() {
  reaper_.request_stop();
  changed_.notify_all();
  if (reaper_.joinable()) reaper_.join();
  detach_all();
}

void VmService::detach_all() {
  // Stopped and joined here, before the workers it talks to are let go.
  reconnector_.stop();
  std::map<std::string, std::jthread> migrations;
  {
    std::lock_guard lock(migration_threads_mutex_);
    migrations.swap(migration_threads_);
  }
  // Cut and joined here: each ends its worker's migration, whose VM runs on.
  migrations.clear();
  std::map<std::string, RunningVm> running;
  {
    std::lock_guard lock(mutex_);
    running.swap(running_);
  }
  // Destroying the handles stops listening; the workers and their VMs run on.
  running.clear();
}

void VmService::mark_incoming(const std::string& name, bool incoming,
                              const std::vector<std::string>& created_disks) {
  const std::filesystem::path marker = vm_dir(name) / kIncomingMarker;
  std::error_code error;
  if (!incoming) {
    std::filesystem::remove(marker, error);
    return;
  }
  std::filesystem::create_directories(vm_dir(name), error);
  std::ofstream(marker) << nlohmann::json{{"created_disks", created_disks}}.dump() << '\n';
}

void VmService::drop_unfinished_incoming() {
  auto records = inventory_->list();
  if (!records) return;
  for (const VmRecord& record : *records) {
    std::error_code error;
    if (!std::filesystem::exists(vm_dir(record.name) / kIncomingMarker, error)) continue;
    // A laminad that stopped during an incoming migration: the VM never ran here (the source
    // ran on), so its definition goes, and the images --storage copy was writing.
    std::ifstream marker(vm_dir(record.name) / kIncomingMarker);
    const auto content = nlohmann::json::parse(marker, nullptr, false);
    if (content.is_object() && content.contains("created_disks") && content["created_disks"].is_array()) {
      for (const auto& path : content["created_disks"]) {
        if (path.is_string()) std::filesystem::remove(path.get<std::string>(), error);
      }
    }
    (void)inventory_->remove(record.name);
    std::filesystem::remove(vm_dir(record.name) / kIncomingMarker, error);
    log_event(record.name, "migration",
              {{"phase", "failed"},
               {"direction", "incoming"},
               {"error", "laminad stopped during the incoming migration; its definition was dropped"}});
  }
}

std::filesystem::path VmService::vm_dir(const std::string& name) const {
  return options_.state_dir / "vms" / name;
}

void VmService::log_event(const std::string& vm, const std::string& kind,
                       const nlohmann::json& detail) {
  (void)inventory_->add_event(vm, kind, detail);
  changed_.notify_all();
}

nlohmann::json VmService::describe(const VmRecord& record) {
  nlohmann::json vm{{"name", record.name},
                    {"uuid", record.uuid},
                    {"autostart", record.autostart},
                    {"on_crash", record.on_crash},
                    {"created", record.created},
                    {"definition", record.definition},
                    {"devices", devices_of(record.definition)},
                    {"console_log", (vm_dir(record.name) / "console.log").string()}};
  std::lock_guard lock(mutex_);
  if (auto found = running_.find(record.name); found != running_.end()) {
    vm["state"] = found->second.state;
    vm["pid"] = found->second.worker->pid();
    vm["started"] = found->second.started;
  } else {
    vm["state"] = "stopped";
    if (auto reason = last_reason_.find(record.name); reason != last_reason_.end()) {
      vm["last_stop"] = reason->second;
    }
  }
  return vm;
}

ServiceResult<nlohmann::json> VmService::create(const nlohmann::json& body,
                                                machine::HostChecks checks) {
  if (auto checked = check_fields(body, {"name", "autostart", "on_crash", "definition"});
      !checked) {
    return std::unexpected(checked.error());
  }
  if (!body.contains("name") || !body["name"].is_string() ||
      !valid_vm_name(body["name"].get<std::string>())) {
    return std::unexpected(ServiceError::bad_request(
        "name", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,62}"));
  }
  VmRecord record{.name = body["name"].get<std::string>(),
                  .uuid = random_uuid(),
                  .definition = nlohmann::json::object(),
                  .autostart = false,
                  .on_crash = "stay",
                  .created = utc_now()};
  if (auto checked = check_policy(body, record, checks); !checked) {
    return std::unexpected(checked.error());
  }
  if (!body.contains("definition")) {
    if (auto config = machine::vm_config_from_definition(record.definition); !config) {
      return std::unexpected(definition_error(config.error()));
    }
  }
  if (auto inserted = inventory_->insert(record); !inserted) {
    if (inserted.error().code() == ErrorCode::kInvalidArgument) {
      return std::unexpected(ServiceError::conflict(inserted.error().message()));
    }
    return std::unexpected(ServiceError::internal(inserted.error()));
  }
  std::error_code error;
  std::filesystem::create_directories(vm_dir(record.name), error);
  log_event(record.name, "created", {{"uuid", record.uuid}});
  return describe(record);
}

ServiceResult<nlohmann::json> VmService::list() {
  auto records = inventory_->list();
  if (!records) return std::unexpected(ServiceError::internal(records.error()));
  nlohmann::json vms = nlohmann::json::array();
  for (const VmRecord& record : *records) vms.push_back(describe(record));
  return nlohmann::json{{"vms", vms}};
}

ServiceResult<nlohmann::json> VmService::get(const std::string& name) {
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  nlohmann::json vm = describe(**found);
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) worker = running->second.worker.get();
  }
  // A running VM's devices: the PCI slot each sits in now, and whether each card's link is
  // up, as its worker says (kept only in their expected shape).
  if (worker != nullptr) {
    if (auto reply = worker->request("query", std::chrono::seconds(1))) {
      size_t disk = 0, card = 0;
      for (auto& device : vm["devices"]) {
        const bool is_disk = device["kind"] == "disk";
        const char* list = is_disk ? "disks" : "nics";
        const size_t index = is_disk ? disk++ : card++;
        if (!reply->contains(list) || !(*reply)[list].is_array() || index >= (*reply)[list].size()) continue;
        const nlohmann::json& live = (*reply)[list][index];
        if (live.contains("slot") && live["slot"].is_number_unsigned() && live["slot"].get<uint64_t>() < 32) {
          device["pci_slot"] = fmt::format("00:{:02x}.0", live["slot"].get<uint64_t>());
        }
        if (live.contains("link_up") && live["link_up"].is_boolean()) {
          device["link"] = live["link_up"].get<bool>() ? "up" : "down";
        }
      }
    }
  }
  return vm;
}

ServiceResult<nlohmann::json> VmService::update(const std::string& name,
                                                const nlohmann::json& body) {
  if (auto checked = check_fields(body, {"autostart", "on_crash", "definition"}); !checked) {
    return std::unexpected(checked.error());
  }
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  VmRecord record = **found;
  if (auto checked = check_policy(body, record); !checked) return std::unexpected(checked.error());
  {
    std::lock_guard lock(mutex_);
    if (body.contains("definition") && running_.contains(name)) {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is running: stop it to change its definition", name)));
    }
  }
  if (auto updated = inventory_->update(record); !updated) {
    return std::unexpected(ServiceError::internal(updated.error()));
  }
  log_event(name, "updated", nlohmann::json::object());
  return describe(record);
}

ServiceResult<nlohmann::json> VmService::remove(const std::string& name, bool with_disks) {
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  {
    std::lock_guard lock(mutex_);
    if (running_.contains(name)) {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is running: stop it first", name)));
    }
    last_reason_.erase(name);
  }
  // Images its checkpoints froze are its disks too (the definition names their children).
  nlohmann::json disks = (*found)->definition.value("disks", nlohmann::json::array());
  if (auto checkpoints = inventory_->checkpoints(name); checkpoints) {
    for (const CheckpointRecord& checkpoint : *checkpoints) {
      for (const auto& frozen : checkpoint.disks) {
        if (frozen.is_string()) disks.push_back(frozen);
      }
    }
  }
  if (auto removed = inventory_->remove(name); !removed) {
    return std::unexpected(ServiceError::internal(removed.error()));
  }
  nlohmann::json removed_disks = nlohmann::json::array();
  if (with_disks) {
    for (const auto& disk : disks) {
      // The path is the disk spec up to its first option (PATH[,readonly][,serial=S]).
      const std::string spec = disk.get<std::string>();
      const std::string path = spec.substr(0, spec.find(','));
      std::error_code error;
      if (std::filesystem::remove(path, error)) removed_disks.push_back(path);
    }
  }
  std::error_code error;
  std::filesystem::remove_all(vm_dir(name), error);
  log_event(name, "deleted", {{"disks_removed", removed_disks}});
  return nlohmann::json{{"name", name}, {"deleted", true}, {"disks_removed", removed_disks}};
}

ServiceResult<void> VmService::start_switches(const nlohmann::json& definition) {
  if (!definition.contains("nets")) return {};
  for (const auto& net : definition["nets"]) {
    const std::string spec = net.get<std::string>();
    if (!spec.starts_with("switch:")) continue;
    const std::string name = spec.substr(7, spec.find(',') == std::string::npos
                                                ? std::string::npos
                                                : spec.find(',') - 7);
    auto paths = net::switch_paths(name, /*create=*/true);
    if (!paths) return std::unexpected(ServiceError::bad_request("definition.nets", paths.error().message()));
    // The daemon runs beside laminad (a worker's PID namespace would take it down with the
    // VM); "busy" means one serves the switch already.
    auto launched = net::launch_switch_daemon(
        *paths, {.program = options_.lamina_program, .arguments = {"--idle-exit", "10"}},
        std::chrono::seconds(5));
    if (!launched) return std::unexpected(ServiceError{500, "definition.nets", launched.error().message()});
  }
  return {};
}

Result<LaunchedWorker> VmService::launch_worker(const std::string& name) {
  auto found = inventory_->find(name);
  if (!found) return fail(found.error());
  if (!*found) return fail(ErrorCode::kNotFound, fmt::format("no VM named {}", name));
  auto config = machine::vm_config_from_definition((*found)->definition, machine::HostChecks::kNone);
  if (!config) return fail(config.error());
  return launch_worker(name, *config);
}

Result<LaunchedWorker> VmService::launch_worker(const std::string& name,
                                                const machine::VmConfig& config) {
  std::error_code error;
  std::filesystem::create_directories(vm_dir(name), error);
  LaunchedWorker launched;
  WorkerSpawnOptions spawn;
  spawn.program = options_.worker_program;
  spawn.log_file = vm_dir(name) / "worker.log";
  spawn.worker_uid = options_.worker_uid;
  spawn.worker_gid = options_.worker_gid;
  spawn.address_space_limit = address_space_limit(config);
  spawn.control_socket = vm_dir(name) / "control.sock";
  // The kernel bounds the VM's memory where the host has a memory cgroup laminad may use.
  if (auto cgroup = WorkerCgroup::create(name, memory_cgroup_limit(config))) {
    launched.cgroup.emplace(std::move(*cgroup));
    spawn.cgroup = &*launched.cgroup;
    launched.memory_cgroup = launched.cgroup->path().string();
  } else {
    launched.memory_cgroup = "none (" + cgroup.error().message() + ")";
  }
  auto process = WorkerProcess::launch(
      spawn, [this, name](const nlohmann::json& event) { on_worker_event(name, event); },
      [this, name](const WorkerExit& exit) { on_worker_exit(name, exit); });
  if (!process) return fail(process.error());
  launched.process = std::move(*process);
  return launched;
}

ServiceResult<nlohmann::json> VmService::start(const std::string& name, int restore_fd,
                                               LaunchedWorker* launched,
                                               migration::PhaseTimes* phases) {
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  const VmRecord& record = **found;
  {
    std::lock_guard lock(mutex_);
    if (running_.contains(name)) {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is {}", name, running_[name].state)));
    }
    // Claimed while the worker starts, so a second start is refused.
    running_[name].state = "starting";
  }
  auto unclaim = [&] {
    std::lock_guard lock(mutex_);
    running_.erase(name);
  };
  const nlohmann::json& definition = record.definition;
  // No start_switches() here: granting a switch port below connects to the switch's daemon
  // and starts one beside laminad when none serves it. Launching one every start (to hear it
  // say "busy") cost a fork and exec, 8-15 ms of a live migration's downtime.
  // laminad opens everything the VM uses (images under the reference policy with their locks,
  // boot files, taps, switch ports) and hands the descriptors over: the worker's sandbox can
  // open no host path. Held until the worker answers, then laminad's copies close.
  net::SwitchConnectOptions switch_options;
  switch_options.daemon = {.program = options_.lamina_program, .arguments = {"--idle-exit", "10"}};
  auto grants = machine::grant_host_ends(definition, name, switch_options);
  if (phases) phases->mark("grants");
  if (!grants) {
    unclaim();
    log_event(name, "start_failed", {{"reason", grants.error().message()}});
    return std::unexpected(ServiceError{422, "definition", grants.error().message()});
  }
  std::error_code error;
  std::filesystem::create_directories(vm_dir(name), error);
  // Without a serial setting of its own the VM's first serial port is linked to laminad: the
  // console log, the WebSocket clients.
  std::shared_ptr<ConsoleHub> console;
  UniqueFd worker_console;
  if (!definition.contains("serial")) {
    auto hub = link_console(name, worker_console, /*append=*/false);
    if (!hub) {
      unclaim();
      return std::unexpected(ServiceError::internal(hub.error()));
    }
    console = std::move(*hub);
  }
  // A migration's destination launched the worker ahead; any other start launches it now.
  LaunchedWorker own;
  Result<void> started;
  if (launched == nullptr || !launched->process) {
    auto fresh = launch_worker(name, grants->config);
    if (fresh) {
      own = std::move(*fresh);
    } else {
      started = fail(fresh.error());
    }
    launched = &own;
  }
  if (started) {
    WorkerSpawnOptions spawn;
    spawn.vm_name = name;
    spawn.definition = grants->definition;
    spawn.log_file = vm_dir(name) / "worker.log";
    spawn.console_fd = worker_console.get();
    spawn.grants = &grants->files;
    spawn.restore_fd = restore_fd;
    nlohmann::json answer;
    started = launched->process->start(spawn, &answer);
    if (phases) {
      phases->mark("worker_start");
      // The worker's own breakdown of its start (a worker's message: checked).
      if (answer.is_object() && answer.contains("phases")) {
        if (auto theirs = migration::PhaseTimes::from_json(answer["phases"])) {
          phases->append(*theirs, "worker.");
        }
      }
    }
  }
  Result<std::unique_ptr<WorkerProcess>> worker =
      started ? Result<std::unique_ptr<WorkerProcess>>(std::move(launched->process))
              : fail(started.error());
  launched->process.reset();
  if (!worker) {
    unclaim();
    log_event(name, "start_failed", {{"reason", worker.error().message()}});
    return std::unexpected(ServiceError{422, "definition", worker.error().message()});
  }
  const pid_t pid = (*worker)->pid();
  {
    std::lock_guard lock(mutex_);
    RunningVm& vm = running_[name];
    vm.worker = std::move(*worker);
    vm.console = std::move(console);
    vm.state = "running";
    vm.started = utc_now();
    last_reason_.erase(name);
  }
  log_event(name, "started", {{"pid", pid}, {"memory_cgroup", launched->memory_cgroup}});
  return describe(record);
}

void VmService::on_worker_event(const std::string& name, const nlohmann::json& event) {
  const std::string kind = event.value("event", "");
  std::lock_guard lock(mutex_);
  auto found = running_.find(name);
  if (found == running_.end()) return;
  if (kind == "state" && event.contains("state") && event["state"].is_string()) {
    const std::string state = event["state"].get<std::string>();
    if (state == "running" || state == "paused") found->second.state = state;
  } else if (kind == "migration" && event.contains("phase") && event["phase"].is_string()) {
    // Progress and outcome, kept in their expected shape (a worker's message is not trusted).
    const std::string phase = event["phase"].get<std::string>();
    nlohmann::json detail{{"phase", phase}};
    for (const char* field : {"round", "ram_bytes", "disk_bytes", "disk_copied_bytes",
                              "transferred_bytes", "remaining_bytes",
                              "dirty_rate", "bandwidth", "throttle_percent", "rounds",
                              "downtime_ms", "downtime_us", "total_ms"}) {
      if (event.contains(field) && event[field].is_number_unsigned()) detail[field] = event[field];
    }
    // The switchover's breakdown, only in its checked shape.
    if (event.contains("switchover")) {
      if (auto phases = migration::PhaseTimes::from_json(event["switchover"])) {
        detail["switchover"] = phases->to_json();
      }
    }
    if (event.contains("error") && event["error"].is_string()) detail["error"] = event["error"];
    if (phase == "completed") found->second.migrated = true;
    if (phase == "completed" || phase == "failed") found->second.migrating = false;
    log_event(name, "migration", detail);
  } else if (kind == "net_backend_failed" && event.contains("mac") && event["mac"].is_string()) {
    // A card's switch daemon went away: reconnect it in the background (vm_devices.cc).
    auto mac = net::MacAddress::parse(event["mac"].get<std::string>());
    if (!mac) return;
    const std::string error = event.contains("error") && event["error"].is_string()
                                  ? event["error"].get<std::string>().substr(0, 300)
                                  : "";
    const std::string key = name + " " + mac->to_string();
    if (reconnecting_.contains(key) || reconnecting_.size() >= kMaxReconnecting) return;
    reconnecting_.insert(key);
    log_event(name, "net_backend_failed", {{"mac", mac->to_string()}, {"error", error}});
    reconnector_.post([this, name, card = *mac] { return reconnect_card(name, card); },
                      [this, name, key, card = *mac](const Result<void>& last, int tries) {
                        {
                          std::lock_guard done_lock(mutex_);
                          reconnecting_.erase(key);
                        }
                        // kNotFound: the VM stopped or the card was detached meanwhile.
                        if (last) {
                          log_event(name, "net_reconnected", {{"mac", card.to_string()}, {"attempt", tries}});
                        } else if (last.error().code() != ErrorCode::kNotFound) {
                          log_event(name, "net_reconnect_failed",
                                    {{"mac", card.to_string()}, {"error", last.error().message()}});
                        }
                      });
  } else if (kind == "stopped") {
    // Kept only in its expected shape: a worker's message is not trusted.
    nlohmann::json stop{{"exit", event.value("exit", "")},
                        {"status", event.value("status", 0)},
                        {"reason", event.value("reason", "")}};
    found->second.last_stop = stop;
  }
}

void VmService::on_worker_exit(const std::string& name, const WorkerExit& exit) {
  nlohmann::json detail;
  bool crashed;
  bool migrated = false;
  // An exited process has left its cgroup (even before it is reaped), which goes now; a
  // SIGKILL from the OOM killer counted there is the VM's memory limit.
  const std::optional<uint64_t> oom_kills = WorkerCgroup::remove(name);
  {
    std::lock_guard lock(mutex_);
    auto found = running_.find(name);
    if (found == running_.end()) return;
    RunningVm vm = std::move(found->second);
    running_.erase(found);
    detail = vm.last_stop.is_null() ? nlohmann::json::object() : vm.last_stop;
    detail["worker"] = exit.describe();
    crashed = vm.last_stop.is_null() || exit.signaled;
    migrated = vm.migrated && !crashed;
    std::string reason;
    if (crashed) {
      reason = fmt::format("the worker {}", exit.describe());
      if (exit.signaled && exit.code == SIGSYS) {
        reason += fmt::format(" ({})", forbidden_syscall(vm_dir(name) / "worker.log"));
      }
      if (exit.signaled && exit.code == SIGKILL && oom_kills.value_or(0) > 0) {
        reason += " (out of memory: the kernel's OOM killer, at the VM's memory cgroup limit)";
      }
    } else {
      reason = detail.value("reason", "");
      if (reason.empty()) reason = detail.value("exit", "");
    }
    detail["reason"] = reason;
    last_reason_[name] = reason;
    // This runs on the worker's own reader thread: the handle is destroyed by the reaper, and
    // so is the console hub, after it has read the guest's last output.
    finished_.push_back(std::move(vm.worker));
    finished_consoles_.push_back(std::move(vm.console));
    std::error_code ignored;
    std::filesystem::remove(vm_dir(name) / "control.sock", ignored);
    if (crashed) {
      auto record = inventory_->find(name);
      if (record && *record && (*record)->on_crash == "restart") restart_.push_back(name);
    }
  }
  log_event(name, crashed ? "crashed" : "stopped", detail);
  if (migrated) {
    // The VM lives on the destination now: its definition leaves this host (its disks, on
    // shared storage, stay where they are).
    {
      std::lock_guard lock(mutex_);
      last_reason_.erase(name);
    }
    (void)inventory_->remove(name);
    log_event(name, "migrated", nlohmann::json::object());
  }
}

void VmService::reap(std::stop_token stop) {
  while (!stop.stop_requested()) {
    std::vector<std::unique_ptr<WorkerProcess>> finished;
    std::vector<std::shared_ptr<ConsoleHub>> consoles;
    std::vector<std::string> restart;
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, std::chrono::milliseconds(500));
      finished.swap(finished_);
      consoles.swap(finished_consoles_);
      restart.swap(restart_);
    }
    finished.clear();
    // A moment for the hub to read what the guest printed last (EOF follows the worker's end).
    if (!consoles.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    consoles.clear();
    for (const std::string& name : restart) {
      if (auto started = start(name); !started) {
        log_event(name, "restart_failed", {{"reason", started.error().message}});
      }
    }
  }
}

ServiceResult<WorkerProcess*> VmService::running_worker(const std::string& name,
                                                       const std::function<void(RunningVm&)>& while_locked) {
  std::lock_guard lock(mutex_);
  auto found = running_.find(name);
  if (found == running_.end() || !found->second.worker) {
    if (auto record = inventory_->find(name); record && !*record) {
      return std::unexpected(ServiceError::no_vm(name));
    }
    return std::unexpected(ServiceError::conflict(fmt::format("{} is not running", name)));
  }
  if (while_locked) while_locked(found->second);
  return found->second.worker.get();
}

ServiceResult<nlohmann::json> VmService::stop(const std::string& name,
                                              const StopOptions& options) {
  auto running = running_worker(name, [](RunningVm& vm) { vm.state = "stopping"; });
  if (!running) return std::unexpected(running.error());
  WorkerProcess* worker = *running;
  // The handle stays valid until on_worker_exit hands it to the reaper, which needs the
  // reaper's next turn, so waiting on it here is safe.
  bool gone = false;
  std::string how = "power button";
  if (!options.force) {
    if (worker->request("power_button")) gone = worker->wait_exit(options.timeout);
  }
  if (!gone) {
    how = "forced";
    if (worker->request("stop")) gone = worker->wait_exit(std::chrono::seconds(10));
  }
  if (!gone) {
    how = "killed";
    worker->kill();
    worker->wait_exit(std::chrono::seconds(10));
  }
  return nlohmann::json{{"name", name}, {"state", "stopped"}, {"how", how}};
}

ServiceResult<nlohmann::json> VmService::kill(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto found = running_.find(name);
  if (found == running_.end() || !found->second.worker) {
    return std::unexpected(ServiceError::conflict(fmt::format("{} is not running", name)));
  }
  found->second.worker->kill();
  return nlohmann::json{{"name", name}, {"killed", true}};
}

ServiceResult<nlohmann::json> VmService::control(const std::string& name, std::string_view op) {
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    auto found = running_.find(name);
    if (found == running_.end() || !found->second.worker) {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is not running", name)));
    }
    if (op == "pause" && found->second.state == "paused") {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is paused already", name)));
    }
    if (op == "resume" && found->second.state != "paused") {
      return std::unexpected(ServiceError::conflict(fmt::format("{} is not paused", name)));
    }
    worker = found->second.worker.get();
  }
  auto reply = worker->request(op);
  if (!reply) return std::unexpected(ServiceError{502, "", reply.error().message()});
  {
    std::lock_guard lock(mutex_);
    if (auto found = running_.find(name); found != running_.end()) {
      if (op == "pause") found->second.state = "paused";
      if (op == "resume") found->second.state = "running";
    }
  }
  log_event(name, std::string(op == "reset" ? "reset" : op == "pause" ? "paused" : "resumed"),
         nlohmann::json::object());
  return get(name);
}

Result<std::shared_ptr<ConsoleHub>> VmService::link_console(const std::string& name,
                                                           UniqueFd& worker_end, bool append) {
  int link[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, link) != 0) {
    return fail(ErrorCode::kIo, "socketpair for the console failed");
  }
  worker_end.reset(link[1]);
  return ConsoleHub::start(UniqueFd(link[0]), vm_dir(name) / "console.log", append);
}

void VmService::adopt_running_workers() {
  auto records = inventory_->list();
  if (!records) return;
  for (const VmRecord& record : *records) {
    const std::string& name = record.name;
    const std::filesystem::path socket = vm_dir(name) / "control.sock";
    std::error_code error;
    if (!std::filesystem::exists(socket, error)) continue;
    auto adopted = WorkerProcess::adopt(
        socket, [this, name](const nlohmann::json& event) { on_worker_event(name, event); },
        [this, name](const WorkerExit& exit) { on_worker_exit(name, exit); });
    if (!adopted) {
      // Nobody listens: the worker ended while no laminad ran.
      std::filesystem::remove(socket, error);
      continue;
    }
    auto& [worker, hello] = *adopted;
    std::shared_ptr<ConsoleHub> console;
    if (!record.definition.contains("serial")) {
      UniqueFd worker_end;
      auto hub = link_console(name, worker_end, /*append=*/true);
      const int fds[] = {worker_end.get()};
      if (hub && worker->request("attach_console", std::chrono::seconds(5), fds)) {
        console = std::move(*hub);
      }
    }
    const pid_t pid = worker->pid();
    const std::string state = hello.value("state", "running") == "paused" ? "paused" : "running";
    {
      std::lock_guard lock(mutex_);
      RunningVm& vm = running_[name];
      vm.worker = std::move(worker);
      vm.console = std::move(console);
      vm.state = state;
      vm.started = utc_now();
    }
    log_event(name, "adopted", {{"pid", pid}, {"state", state}});
  }
}

ServiceResult<std::shared_ptr<ConsoleHub>> VmService::console(const std::string& name) {
  {
    std::lock_guard lock(mutex_);
    if (auto found = running_.find(name); found != running_.end() && found->second.worker) {
      if (!found->second.console) {
        return std::unexpected(
            ServiceError::conflict(fmt::format("{}'s serial port goes to its definition's \"serial\"", name)));
      }
      return found->second.console;
    }
  }
  if (auto record = inventory_->find(name); record && !*record) {
    return std::unexpected(ServiceError::no_vm(name));
  }
  return std::unexpected(ServiceError::conflict(fmt::format("{} is not running", name)));
}

ServiceResult<nlohmann::json> VmService::events(int64_t after, const std::string& vm,
                                                std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    auto events = inventory_->events(after, vm, 1000);
    if (!events) return std::unexpected(ServiceError::internal(events.error()));
    if (!events->empty() || std::chrono::steady_clock::now() >= deadline) {
      nlohmann::json list = nlohmann::json::array();
      for (const EventRecord& event : *events) {
        list.push_back({{"id", event.id},
                        {"time", event.time},
                        {"vm", event.vm},
                        {"kind", event.kind},
                        {"detail", event.detail}});
      }
      return nlohmann::json{{"events", list}};
    }
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() +
                                                     std::chrono::milliseconds(250)));
  }
}

namespace {

// One Prometheus metric family: its help line, type and samples.
struct MetricFamily {
  const char* name;
  const char* type;
  const char* help;
  std::string samples;
};

// utime + stime of a process, in seconds, from /proc (laminad reads its workers from outside:
// a sandboxed worker cannot look at itself).
std::optional<double> cpu_seconds(pid_t pid) {
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // The command name is in parentheses and may hold spaces: fields count from the last ')'.
  const size_t end = text.rfind(')');
  if (end == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(end + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) {
      stime = std::stoull(field);
      return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> resident_bytes(pid_t pid) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  }
  return std::nullopt;
}

}  // namespace

std::string VmService::metrics() {
  MetricFamily running{"lamina_vm_running", "gauge", "Whether the VM runs (1) or not (0).", {}};
  MetricFamily vcpus{"lamina_vm_vcpus", "gauge", "vCPUs of a running VM.", {}};
  MetricFamily memory{"lamina_vm_memory_bytes", "gauge", "Guest RAM of a running VM.", {}};
  MetricFamily resident{"lamina_vm_worker_resident_bytes", "gauge",
                        "Resident memory of the VM's worker process (guest RAM it touched "
                        "included).", {}};
  MetricFamily cpu{"lamina_vm_cpu_seconds_total", "counter",
                   "CPU time of the VM's worker (vCPUs, devices, I/O).", {}};
  MetricFamily instructions{"lamina_vm_guest_instructions_total", "counter",
                            "Guest instructions retired (built-in CPU).", {}};
  MetricFamily disk_ops{"lamina_vm_disk_operations_total", "counter",
                        "Completed guest disk requests by disk and operation.", {}};
  MetricFamily disk_bytes{"lamina_vm_disk_bytes_total", "counter",
                          "Bytes the guest read from and wrote to each disk.", {}};
  MetricFamily frames{"lamina_vm_network_frames_total", "counter",
                      "Frames each network card sent (tx) and received (rx).", {}};
  MetricFamily dropped{"lamina_vm_network_dropped_frames_total", "counter",
                       "Frames dropped by each network card, by direction.", {}};
  // The built-in CPU's translator (VMs on --cpu-engine jit only).
  MetricFamily translations{"lamina_vm_jit_translations_total", "counter",
                            "Blocks of guest code the built-in CPU translated (all vCPUs).", {}};
  MetricFamily cache_flushes{"lamina_vm_jit_code_cache_flushes_total", "counter",
                             "Times a vCPU's code cache was full and emptied.", {}};
  MetricFamily cache_used{"lamina_vm_jit_code_cache_bytes", "gauge",
                          "Translated host code held in the VM's code caches.", {}};
  MetricFamily cache_limit{"lamina_vm_jit_code_cache_limit_bytes", "gauge",
                           "The bound on the VM's code caches (code_cache, all vCPUs).", {}};
  auto records = inventory_->list();
  if (records) {
    for (const VmRecord& record : *records) {
      WorkerProcess* worker = nullptr;
      {
        std::lock_guard lock(mutex_);
        if (auto found = running_.find(record.name); found != running_.end()) {
          worker = found->second.worker.get();
        }
      }
      const std::string vm = fmt::format("vm=\"{}\"", record.name);
      running.samples += fmt::format("lamina_vm_running{{{}}} {}\n", vm, worker ? 1 : 0);
      if (!worker) continue;
      if (auto seconds = cpu_seconds(worker->pid())) {
        cpu.samples += fmt::format("lamina_vm_cpu_seconds_total{{{}}} {:.2f}\n", vm, *seconds);
      }
      if (auto bytes = resident_bytes(worker->pid())) {
        resident.samples += fmt::format("lamina_vm_worker_resident_bytes{{{}}} {}\n", vm, *bytes);
      }
      auto reply = worker->request("query", std::chrono::seconds(1));
      if (!reply) continue;
      // A worker's numbers are printed only when they are numbers.
      auto number = [](const nlohmann::json& object, const char* key) -> uint64_t {
        return object.is_object() && object.contains(key) && object[key].is_number_unsigned()
                   ? object[key].get<uint64_t>()
                   : 0;
      };
      instructions.samples += fmt::format("lamina_vm_guest_instructions_total{{{}}} {}\n", vm,
                                          number(*reply, "instructions"));
      memory.samples += fmt::format("lamina_vm_memory_bytes{{{}}} {}\n", vm,
                                    number(*reply, "memory_bytes"));
      vcpus.samples += fmt::format("lamina_vm_vcpus{{{}}} {}\n", vm, number(*reply, "vcpus"));
      if (reply->contains("code_cache") && (*reply)["code_cache"].is_object()) {
        const nlohmann::json& cache = (*reply)["code_cache"];
        translations.samples += fmt::format("lamina_vm_jit_translations_total{{{}}} {}\n", vm,
                                            number(cache, "translations"));
        cache_flushes.samples += fmt::format("lamina_vm_jit_code_cache_flushes_total{{{}}} {}\n",
                                             vm, number(cache, "flushes"));
        cache_used.samples += fmt::format("lamina_vm_jit_code_cache_bytes{{{}}} {}\n", vm,
                                          number(cache, "used_bytes"));
        cache_limit.samples += fmt::format("lamina_vm_jit_code_cache_limit_bytes{{{}}} {}\n", vm,
                                           number(cache, "capacity_bytes"));
      }
      const auto empty = nlohmann::json::array();
      const auto& disks = reply->contains("disks") && (*reply)["disks"].is_array()
                              ? (*reply)["disks"] : empty;
      for (size_t i = 0; i < disks.size() && i < 64; ++i) {
        const std::string labels = fmt::format("{},disk=\"{}\"", vm, i);
        disk_ops.samples += fmt::format(
            "lamina_vm_disk_operations_total{{{},op=\"read\"}} {}\n"
            "lamina_vm_disk_operations_total{{{},op=\"write\"}} {}\n"
            "lamina_vm_disk_operations_total{{{},op=\"flush\"}} {}\n",
            labels, number(disks[i], "read_ops"), labels, number(disks[i], "write_ops"), labels,
            number(disks[i], "flushes"));
        disk_bytes.samples += fmt::format(
            "lamina_vm_disk_bytes_total{{{},op=\"read\"}} {}\n"
            "lamina_vm_disk_bytes_total{{{},op=\"write\"}} {}\n",
            labels, number(disks[i], "read_bytes"), labels, number(disks[i], "write_bytes"));
      }
      const auto& nics = reply->contains("nics") && (*reply)["nics"].is_array()
                             ? (*reply)["nics"] : empty;
      for (size_t i = 0; i < nics.size() && i < 64; ++i) {
        const std::string labels = fmt::format("{},nic=\"{}\"", vm, i);
        frames.samples += fmt::format(
            "lamina_vm_network_frames_total{{{},direction=\"tx\"}} {}\n"
            "lamina_vm_network_frames_total{{{},direction=\"rx\"}} {}\n",
            labels, number(nics[i], "tx_frames"), labels, number(nics[i], "rx_frames"));
        dropped.samples += fmt::format(
            "lamina_vm_network_dropped_frames_total{{{},direction=\"tx\"}} {}\n"
            "lamina_vm_network_dropped_frames_total{{{},direction=\"rx\"}} {}\n",
            labels, number(nics[i], "tx_dropped"), labels, number(nics[i], "rx_dropped"));
      }
    }
  }
  std::string text;
  for (const MetricFamily* family : {&running, &vcpus, &memory, &resident, &cpu, &instructions,
                                     &disk_ops, &disk_bytes, &frames, &dropped, &translations,
                                     &cache_flushes, &cache_used, &cache_limit}) {
    text += fmt::format("# HELP {} {}\n# TYPE {} {}\n{}", family->name, family->help,
                        family->name, family->type, family->samples);
  }
  return text;
}

void VmService::start_autostart_vms() {
  auto records = inventory_->list();
  if (!records) return;
  for (const VmRecord& record : *records) {
    if (!record.autostart) continue;
    if (auto started = start(record.name); !started) {
      log_event(record.name, "autostart_failed", {{"reason", started.error().message}});
    }
  }
}

}  // namespace lamina::mgmt
