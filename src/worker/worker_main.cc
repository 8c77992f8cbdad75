// lamina-vm: the worker process laminad starts for one running VM (not for direct use). It
// speaks the control protocol (control_protocol.h) on the socket given as --control-fd, opens
// what the VM definition names, enters its sandbox and runs the VM until it stops.

#include <dirent.h>
#include <malloc.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "base/granted_files.h"
#include "base/message_channel.h"
#include "display/png_writer.h"
#include "machine/vm_definition.h"
#include "virtio/virtio_block_setup.h"
#include "migration/cpu_model_stream.h"
#include "migration/machine_state.h"
#include "migration/migration_protocol.h"
#include "migration/phase_times.h"
#include "worker/control_protocol.h"
#include "worker/sandbox.h"
#include "worker/vm_runner.h"

namespace lamina::worker {
namespace {

// The current controller: replies and events come from two threads and the channel wants one
// sender at a time; a new laminad replaces the channel of one that went away.
class ControlSender {
 public:
  explicit ControlSender(MessageChannel channel) : channel_(std::move(channel)) {}
  void send(nlohmann::json message) {
    message["v"] = kControlProtocolVersion;
    std::lock_guard lock(mutex_);
    // A controller that went away misses the message; the worker carries on regardless.
    if (channel_.valid()) (void)channel_.send(message);
  }
  // The receiving side's descriptor (receives happen on the control thread only).
  MessageChannel& channel() { return channel_; }
  void replace(MessageChannel channel) {
    std::lock_guard lock(mutex_);
    channel_ = std::move(channel);
  }

 private:
  MessageChannel channel_;
  std::mutex mutex_;
};

// Hotplug requests (attach, detach, set_vcpus, set_memory) may wait seconds for the guest to
// act: they run here, one after another in the order they came, and answer when done, so the
// control thread keeps answering everything else meanwhile (queries, pause, stop, console).
class HotplugRequests {
 public:
  explicit HotplugRequests(ControlSender& sender)
      : sender_(sender), thread_([this](std::stop_token stop) { run(stop); }) {}
  HotplugRequests(const HotplugRequests&) = delete;
  HotplugRequests& operator=(const HotplugRequests&) = delete;

  void post(std::move_only_function<nlohmann::json()> request) {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(request));
    posted_.notify_one();
  }

 private:
  void run(std::stop_token stop) {
    for (;;) {
      std::unique_lock lock(mutex_);
      if (!posted_.wait(lock, stop, [this] { return !queue_.empty(); })) return;
      auto request = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      sender_.send(request());
    }
  }

  ControlSender& sender_;
  std::mutex mutex_;
  std::condition_variable_any posted_;
  std::deque<std::move_only_function<nlohmann::json()>> queue_;
  std::jthread thread_;  // last: stopped and joined first
};

std::string_view exit_name(machine::MachineExit exit) {
  return kExitNames.at(static_cast<size_t>(exit));
}

// Threads of this process (the sandbox needs exactly one: namespaces and the new root apply to
// the calling thread).
size_t thread_count() {
  DIR* tasks = ::opendir("/proc/self/task");
  if (!tasks) return 0;
  size_t count = 0;
  while (dirent* entry = ::readdir(tasks)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(tasks);
  return count;
}

// Answers one request after "start".
nlohmann::json handle(VmRunner& runner, const nlohmann::json& request) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  const std::string op = request.value("op", "");
  if (op == "query") {
    reply["state"] = to_string(runner.state());
    reply["vcpus"] = runner.vcpus();
    reply["memory_bytes"] = runner.memory_bytes();
    reply["instructions"] = runner.instructions();
    reply["boots"] = runner.boots();
    if (const accel::CodeCacheStats cache = runner.code_cache_stats(); cache.capacity_bytes != 0) {
      reply["code_cache"] = {{"translations", cache.translations},
                             {"flushes", cache.flushes},
                             {"used_bytes", cache.used_bytes},
                             {"capacity_bytes", cache.capacity_bytes}};
    }
    const VmRunner::Traffic traffic = runner.traffic();
    const VmRunner::Placement placement = runner.placement();
    for (size_t i = 0; i < traffic.disks.size(); ++i) {
      const auto& disk = traffic.disks[i];
      reply["disks"].push_back({{"read_ops", disk.read_ops},
                                {"read_bytes", disk.read_bytes},
                                {"write_ops", disk.write_ops},
                                {"write_bytes", disk.write_bytes},
                                {"flushes", disk.flushes}});
      if (i < placement.disk_slots.size()) reply["disks"].back()["slot"] = placement.disk_slots[i];
    }
    for (size_t i = 0; i < traffic.nics.size(); ++i) {
      const auto& nic = traffic.nics[i];
      reply["nics"].push_back({{"tx_frames", nic.transmitted_frames},
                               {"tx_dropped", nic.transmit_dropped},
                               {"rx_frames", nic.received_frames},
                               {"rx_dropped", nic.receive_dropped}});
      if (i < placement.network_slots.size()) {
        reply["nics"].back()["slot"] = placement.network_slots[i];
        reply["nics"].back()["link_up"] = bool(placement.links_up[i]);
      }
    }
  } else if (op == "pause") {
    runner.pause();
  } else if (op == "resume") {
    runner.resume();
  } else if (op == "power_button") {
    runner.power_button();
  } else if (op == "reset") {
    runner.reset();
  } else if (op == "stop") {
    runner.stop("stopped by the host");
  } else if (op == "attach_console") {
    reply["ok"] = false;
    reply["error"] = "attach_console needs one socket";
  } else {
    reply["ok"] = false;
    reply["error"] = fmt::format("unknown op '{}'", op);
  }
  return reply;
}

// "save" with one fd, the state file laminad opened (a temporary name it renames once this
// answers): the VM is quiesced, saved and stopped (the stopped event follows); on an error it
// runs on.
nlohmann::json save_state(VmRunner& runner, const nlohmann::json& request,
                          std::span<UniqueFd> fds) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  if (fds.size() != 1) {
    reply["ok"] = false;
    reply["error"] = "save needs one file descriptor: the state file";
    return reply;
  }
  auto saved = runner.save_and_stop(fds[0].get());
  if (!saved) {
    reply["ok"] = false;
    reply["error"] = saved.error().message();
    return reply;
  }
  reply["state_bytes"] = saved->state_bytes;
  reply["ram_bytes"] = saved->ram_bytes;
  reply["ram_written"] = saved->ram_written;
  reply["file_bytes"] = saved->file_bytes;
  return reply;
}

// "screenshot" with one fd, a file laminad made: the screen as PNG, written from offset 0; the
// reply adds "width", "height", "png_bytes" and, in a text mode, "text" (the characters).
nlohmann::json take_screenshot(VmRunner& runner, const nlohmann::json& request,
                               std::span<UniqueFd> fds) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  auto refuse = [&reply](std::string why) {
    reply["ok"] = false;
    reply["error"] = std::move(why);
    return reply;
  };
  if (fds.size() != 1) return refuse("screenshot needs one file descriptor: the PNG's file");
  auto frame = runner.screenshot();
  if (!frame) return refuse(frame.error().message());
  auto png = display::encode_png(*frame);
  if (!png) return refuse(png.error().message());
  for (size_t done = 0; done < png->size();) {
    const ssize_t wrote = ::pwrite(fds[0].get(), png->data() + done, png->size() - done,
                                   static_cast<off_t>(done));
    if (wrote <= 0) return refuse(fmt::format("writing the screenshot: {}", std::strerror(errno)));
    done += static_cast<size_t>(wrote);
  }
  reply["width"] = frame->width;
  reply["height"] = frame->height;
  reply["png_bytes"] = png->size();
  if (!frame->text.empty()) reply["text"] = frame->text;
  return reply;
}

nlohmann::json progress_event(const migration::LiveMigrationProgress& progress) {
  return {{"event", "migration"},
          {"phase", progress.phase},
          {"round", progress.round},
          {"ram_bytes", progress.ram_bytes},
          {"disk_bytes", progress.disk_bytes},
          {"disk_copied_bytes", progress.disk_copied_bytes},
          {"transferred_bytes", progress.transferred_bytes},
          {"remaining_bytes", progress.remaining_bytes},
          {"dirty_rate", progress.dirty_rate},
          {"bandwidth", progress.bandwidth},
          {"throttle_percent", progress.throttle_percent}};
}

// "migrate" with the link to the destination (laminad relays it, already past the offer)
// and the lanes' links after it (further connections that carry pages), as fds: answers at once and migrates on a thread of its own, reporting "migration" events
// (progress, then "completed" or "failed"); on success the VM stops ("migrated").
nlohmann::json start_migration(ControlSender& sender, VmRunner& runner,
                               const nlohmann::json& request, std::span<UniqueFd> fds) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  const auto downtime = request.value("max_downtime_ms", int64_t{50});
  const std::string storage = request.value("storage", std::string("shared"));
  if (fds.empty() || fds.size() > migration::kMaxConnections || downtime < 1 || downtime > 600000 ||
      (storage != "shared" && storage != "copy")) {
    reply["ok"] = false;
    reply["error"] = fmt::format("migrate needs 1 to {} file descriptors (the link, then the lanes), "
                                 "max_downtime_ms of 1 to 600000 and storage shared or copy",
                                 migration::kMaxConnections);
    return reply;
  }
  migration::LiveMigrationOptions options;
  options.max_downtime = std::chrono::milliseconds(downtime);
  options.copy_storage = storage == "copy";
  std::vector<UniqueFd> lanes;
  for (size_t index = 1; index < fds.size(); ++index) {
    options.lanes.push_back(fds[index].get());
    lanes.push_back(std::move(fds[index]));
  }
  std::thread([&sender, &runner, options, link = std::move(fds[0]), lanes = std::move(lanes)] {
    auto report = [&sender](const Result<migration::LiveMigrationResult>& result) {
      if (!result) {
        sender.send({{"event", "migration"}, {"phase", "failed"}, {"error", result.error().message()}});
        return;
      }
      sender.send({{"event", "migration"},
                   {"phase", "completed"},
                   {"rounds", result->rounds},
                   {"transferred_bytes", result->transferred_bytes},
                   {"downtime_ms", static_cast<uint64_t>(result->downtime.count() / 1000)},
                   {"downtime_us", static_cast<uint64_t>(result->downtime.count())},
                   {"switchover", result->switchover.to_json()},
                   {"total_ms", static_cast<uint64_t>(result->total.count())}});
    };
    (void)runner.migrate_out(link.get(), options,
                             [&sender](const migration::LiveMigrationProgress& progress) {
                               sender.send(progress_event(progress));
                             },
                             report);
  }).detach();
  return reply;
}

// A request that carries grants (laminad opened the files or ports; their fds came with it):
// `act` gets them and returns what to add to the reply, or the error to answer with.
nlohmann::json granted_request(const nlohmann::json& request, std::vector<UniqueFd> fds,
                               const std::function<Result<nlohmann::json>(GrantedFiles&)>& act) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  auto granted = GrantedFiles::from_wire(request.value("grants", nlohmann::json::object()),
                                         std::move(fds));
  Result<nlohmann::json> done = granted ? act(*granted) : fail(granted.error());
  if (!done) {
    reply["ok"] = false;
    reply["error"] = done.error().message();
    return reply;
  }
  reply.update(*done);
  return reply;
}

// "attach" with {"disk": SPEC} or {"net": SPEC} (`lamina run`'s --disk/--net values), the
// grants laminad recorded while opening it and their fds: the device is plugged into the
// running VM (ACPI PCI hotplug); the reply names its PCI slot.
nlohmann::json attach_device(VmRunner& runner, const nlohmann::json& request,
                             std::vector<UniqueFd> fds) {
  return granted_request(request, std::move(fds), [&](GrantedFiles& granted) -> Result<nlohmann::json> {
    Result<uint8_t> slot = fail(ErrorCode::kInvalidArgument, "attach needs \"disk\" or \"net\"");
    if (request.contains("disk") && request["disk"].is_string()) {
      auto spec = virtio::parse_disk_spec(request["disk"].get<std::string>());
      if (!spec) return fail(spec.error());
      slot = runner.attach_disk(std::move(*spec), &granted);
    } else if (request.contains("net") && request["net"].is_string()) {
      auto option = machine::parse_network(request["net"].get<std::string>());
      if (!option) return fail(option.error());
      slot = runner.attach_network(*option, &granted);
    }
    if (!slot) return fail(slot.error());
    return nlohmann::json{{"slot", *slot}};
  });
}

// "reconnect_net" with {"mac": MAC}, the grants of the port laminad opened anew and their fds:
// the card with that MAC moves to the new port (its switch daemon had died) and its link
// comes up again.
nlohmann::json reconnect_network(VmRunner& runner, const nlohmann::json& request,
                                 std::vector<UniqueFd> fds) {
  return granted_request(request, std::move(fds), [&](GrantedFiles& granted) -> Result<nlohmann::json> {
    if (!request.contains("mac") || !request["mac"].is_string()) {
      return fail(ErrorCode::kInvalidArgument, "reconnect_net needs \"mac\"");
    }
    auto mac = net::MacAddress::parse(request["mac"].get<std::string>());
    if (!mac) return fail(mac.error());
    if (auto reconnected = runner.reconnect_network(*mac, &granted); !reconnected) {
      return fail(reconnected.error());
    }
    return nlohmann::json::object();
  });
}

// "detach" with {"disk": INDEX} or {"net": INDEX} (definition order) and "timeout_ms": the
// guest is asked to release the device and waited for; a guest that does not is answered
// {"ok": false, "timed_out": true} and keeps the device.
nlohmann::json detach_device(VmRunner& runner, const nlohmann::json& request) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  constexpr int64_t kMaxTimeoutMs = 120'000;
  const nlohmann::json& timeout = request.contains("timeout_ms") ? request["timeout_ms"]
                                                                 : nlohmann::json(10'000);
  const bool disk = request.contains("disk") && request["disk"].is_number_unsigned();
  const bool net = request.contains("net") && request["net"].is_number_unsigned();
  if ((!disk && !net) || !timeout.is_number_unsigned() ||
      timeout.get<int64_t>() > kMaxTimeoutMs) {
    reply["ok"] = false;
    reply["error"] = "detach needs \"disk\" or \"net\" (an index) and timeout_ms <= 120000";
    return reply;
  }
  const std::chrono::milliseconds wait(timeout.get<int64_t>());
  const size_t before = disk ? runner.disk_count() : runner.network_count();
  auto detached = disk ? runner.detach_disk(request["disk"].get<size_t>(), wait)
                       : runner.detach_network(request["net"].get<size_t>(), wait);
  if (!detached) {
    reply["ok"] = false;
    reply["error"] = detached.error().message();
    // Machine::hot_remove_virtio's kIo with the device still there: the guest kept it.
    const size_t after = disk ? runner.disk_count() : runner.network_count();
    if (detached.error().code() == ErrorCode::kIo && after == before) reply["timed_out"] = true;
    reply["detached"] = after < before;
  }
  return reply;
}

// "set_vcpus" with "vcpus": N and "timeout_ms": vCPUs are added (ACPI CPU hotplug; the guest
// starts them) or removed (each waits for the guest's eject) until N are present.
nlohmann::json set_vcpus(VmRunner& runner, const nlohmann::json& request) {
  nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
  const nlohmann::json timeout = request.value("timeout_ms", nlohmann::json(10'000));
  if (!request.contains("vcpus") || !request["vcpus"].is_number_unsigned() ||
      !timeout.is_number_unsigned() || timeout.get<int64_t>() > 120'000) {
    reply["ok"] = false;
    reply["error"] = "set_vcpus needs \"vcpus\" (a count) and timeout_ms <= 120000";
    return reply;
  }
  auto set = runner.set_vcpus(request["vcpus"].get<uint32_t>(),
                              std::chrono::milliseconds(timeout.get<int64_t>()));
  if (!set) {
    reply["ok"] = false;
    reply["error"] = set.error().message();
  }
  reply["vcpus"] = runner.vcpus();
  return reply;
}

// Serves the controller until it goes away, then waits on `listener` (laminad's per-VM control
// socket, when given) for the next one: a restarted laminad re-adopts the running VM there.
void serve_requests(ControlSender& sender, VmRunner& runner, const std::string& name,
                    int listener) {
  HotplugRequests hotplug(sender);
  for (;;) {
    auto received = sender.channel().receive();
    if (!received || !*received) {
      // The controller went away (laminad restarting) or broke the protocol: the VM runs on.
      sender.replace(MessageChannel());
      if (listener < 0) return;
      int connection;
      do {
        connection = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      } while (connection < 0 && errno == EINTR);
      if (connection < 0) return;
      sender.replace(MessageChannel(UniqueFd(connection)));
      // No pid: the controller takes it from the kernel (SO_PEERCRED), and getpid is filtered.
      sender.send({{"event", "hello"},
                   {"name", name},
                   {"state", to_string(runner.state())}});
      continue;
    }
    const nlohmann::json& request = (*received)->message;
    if (request.value("v", 0) != kControlProtocolVersion) {
      sender.send({{"id", request.value("id", 0)}, {"ok", false}, {"error", "protocol version"}});
      continue;
    }
    const std::string op = request.value("op", "");
    if (op == "attach_console" && (*received)->fds.size() == 1) {
      nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
      if (auto attached = runner.attach_console(std::move((*received)->fds[0])); !attached) {
        reply["ok"] = false;
        reply["error"] = attached.error().message();
      }
      sender.send(reply);
      continue;
    }
    if (op == "migrate") {
      sender.send(start_migration(sender, runner, request, (*received)->fds));
      continue;
    }
    if (op == "save") {
      sender.send(save_state(runner, request, (*received)->fds));
      continue;
    }
    if (op == "screenshot") {
      sender.send(take_screenshot(runner, request, (*received)->fds));
      continue;
    }
    if (op == "attach") {
      hotplug.post([&runner, request, fds = std::move((*received)->fds)]() mutable {
        return attach_device(runner, request, std::move(fds));
      });
      continue;
    }
    if (op == "reconnect_net") {
      hotplug.post([&runner, request, fds = std::move((*received)->fds)]() mutable {
        return reconnect_network(runner, request, std::move(fds));
      });
      continue;
    }
    if (op == "set_memory") {
      hotplug.post([&runner, request] {
        nlohmann::json reply{{"id", request.value("id", 0)}, {"ok", true}};
        if (!request.contains("bytes") || !request["bytes"].is_number_unsigned()) {
          reply["ok"] = false;
          reply["error"] = "set_memory needs \"bytes\"";
        } else if (auto set = runner.set_memory(request["bytes"].get<uint64_t>()); !set) {
          reply["ok"] = false;
          reply["error"] = set.error().message();
        }
        return reply;
      });
      continue;
    }
    if (op == "set_vcpus") {
      hotplug.post([&runner, request] { return set_vcpus(runner, request); });
      continue;
    }
    if (op == "detach") {
      hotplug.post([&runner, request] { return detach_device(runner, request); });
      continue;
    }
    sender.send(handle(runner, request));
    if (op == "pause" || op == "resume") {
      sender.send({{"event", "state"}, {"state", to_string(runner.state())}});
    }
  }
}

int fail_start(ControlSender& sender, int id, const Error& error) {
  sender.send({{"id", id}, {"ok", false}, {"error", error.message()}});
  fmt::print(stderr, "lamina-vm: {}\n", error.message());
  return 1;
}

int run_worker(int control_fd, int listen_fd, std::optional<std::pair<uid_t, gid_t>> drop_to,
               uint64_t address_space_limit) {
  // A console or control peer that went away is an error on the write, not a SIGPIPE death.
  ::signal(SIGPIPE, SIG_IGN);
  UniqueFd listener(listen_fd);
  // laminad bound it; listening here makes this process the one a reconnecting laminad's
  // SO_PEERCRED names.
  if (listener && ::listen(listener.get(), 2) != 0) listener.reset();
  ControlSender sender{MessageChannel(UniqueFd(control_fd))};
  sender.send({{"event", "hello"}, {"pid", ::getpid()}});
  // While laminad gets the VM ready (a migration's destination: while RAM arrives). Should
  // it fail, enter_sandbox makes these namespaces and says why it cannot.
  const bool namespaces_entered = enter_isolated_namespaces().has_value();
  auto received = sender.channel().receive(std::chrono::seconds(30));
  if (!received || !*received) {
    fmt::print(stderr, "lamina-vm: no start request on the control channel\n");
    return 1;
  }
  const nlohmann::json& start = (*received)->message;
  const int id = start.value("id", 0);
  // Where the start's time goes (a migration's destination reports it with its answer).
  migration::PhaseTimes phases;
  if (start.value("v", 0) != kControlProtocolVersion || start.value("op", "") != "start" ||
      !start.contains("definition") || !start["name"].is_string()) {
    return fail_start(sender, id, Error(ErrorCode::kInvalidArgument, "expected a start request"));
  }
  // laminad checked the definition against the host and opened what it names.
  auto config =
      machine::vm_config_from_definition(start["definition"], machine::HostChecks::kNone);
  if (!config) return fail_start(sender, id, config.error());
  auto kvm = resolve_kvm(*config);
  if (!kvm) return fail_start(sender, id, kvm.error());
  // The fds: the serial console's socket to laminad ("console"), the grants' (base/
  // granted_files.h), then a saved state to continue from ("restore", always the last).
  std::vector<UniqueFd> fds = std::move((*received)->fds);
  const bool with_console = start.value("console", false);
  const bool restoring = start.value("restore", false);
  if (fds.size() < size_t{with_console} + size_t{restoring}) {
    return fail_start(sender, id,
                      Error(ErrorCode::kInvalidArgument,
                            "the start request's descriptors do not match console/restore"));
  }
  UniqueFd console;
  if (with_console) {
    console = std::move(fds.front());
    fds.erase(fds.begin());
  }
  UniqueFd restore;
  if (restoring) {
    restore = std::move(fds.back());
    fds.pop_back();
  }
  // The grants' own copies close when this returns, before the sandbox: the VM keeps only
  // what it opened through them.
  auto runner = [&]() -> Result<std::unique_ptr<VmRunner>> {
    auto granted = GrantedFiles::from_wire(start.value("grants", nlohmann::json::object()),
                                           std::move(fds));
    if (!granted) return fail(granted.error());
    return VmRunner::open(*config, start["name"].get<std::string>(), *kvm, std::move(console),
                          &*granted);
  }();
  if (!runner) return fail_start(sender, id, runner.error());
  phases.mark("open");
  // A card whose backend died (its switch daemon went away): laminad hears of it and may
  // connect the card anew (reconnect_net).
  (*runner)->set_network_failure_listener([&sender](const net::MacAddress& mac, const Error& error) {
    sender.send({{"event", "net_backend_failed"}, {"mac", mac.to_string()}, {"error", error.message()}});
  });
  if (thread_count() != 1) {
    return fail_start(sender, id,
                      Error(ErrorCode::kInternal, "sandbox: the worker has threads before it"));
  }
  // glibc's malloc reads files the sandbox forbids (openat) in two places: past eight arenas
  // it sizes the arena limit from the CPU count in /sys, and shrinking a thread's arena heap
  // first reads /proc/sys/vm/overcommit_memory. A fixed arena limit and a trim threshold no
  // heap reaches mean it never asks; a fixed mmap threshold keeps large buffers (a migration's
  // page batches) in mappings of their own, returned to the host when freed.
  ::mallopt(M_ARENA_MAX, 8);
  ::mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, INT_MAX);
  if (auto sandboxed = enter_sandbox({drop_to, address_space_limit, namespaces_entered});
      !sandboxed) {
    return fail_start(sender, id, sandboxed.error());
  }
  phases.mark("sandbox");
  // Each vCPU thread (and the device threads it starts) narrows its own filter first.
  (*runner)->set_guest_thread_setup([kvm = *kvm] {
    if (auto restricted = restrict_guest_thread(kvm); !restricted) {
      fmt::print(stderr, "lamina-vm: {}\n", restricted.error().message());
      std::fflush(stderr);
      ::_exit(1);
    }
  });
  // A state file is parsed only inside the sandbox (an earlier worker wrote it). Its shape is
  // checked here so a mismatch is the start's answer; restore() checks everything else.
  if (restore) {
    auto shape = migration::read_state_shape(restore.get());
    if (!shape) return fail_start(sender, id, shape.error());
    const uint32_t built_cpus = std::max(config->cpus, config->max_cpus);
    // The state's shape counts boot RAM (the virtio-mem region is a region of its own).
    if (shape->vcpus != built_cpus || shape->memory_bytes != config->memory_bytes) {
      return fail_start(sender, id,
                        Error(ErrorCode::kInvalidArgument,
                              fmt::format("the saved state is of a VM with {} vCPUs and {} MiB, "
                                          "this definition has {} and {} MiB",
                                          shape->vcpus, shape->memory_bytes >> 20, built_cpus,
                                          config->memory_bytes >> 20)));
    }
    // The CPU the guest was started with: refused now, while a migration's source still runs.
    if (shape->cpu) {
      auto here = (*runner)->presented_cpu();
      if (!here) return fail_start(sender, id, here.error());
      if (auto same = migration::check_cpu_model(*shape->cpu, *here); !same) {
        return fail_start(sender, id, same.error());
      }
    }
    if (auto laid_out = (*runner)->restore_from(std::move(restore), shape->devices); !laid_out) {
      return fail_start(sender, id, laid_out.error());
    }
    phases.mark("state_shape");
  }
  const std::string name = start["name"].get<std::string>();
  // The answer, then the control thread that serves laminad from then on.
  auto answer = [&] {
    nlohmann::json reply{{"id", id}, {"ok", true}};
    if (restoring) {
      phases.mark("machine_restore");
      reply["phases"] = phases.to_json();
    }
    sender.send(reply);
    std::jthread control([&] { serve_requests(sender, **runner, name, listener.get()); });
    control.detach();
  };
  // A restored VM answers once its machine is built and has taken the state, just before its
  // vCPUs run (a migration's source stops for good when it hears it, so a state that does not
  // load must be a failed start, not a crash after one); a booting VM answers now.
  bool answered = !restoring;
  if (restoring) {
    (*runner)->set_first_machine_listener([&] {
      answered = true;
      answer();
    });
  } else {
    answer();
  }
  const VmOutcome outcome = (*runner)->run();
  if (!answered) return fail_start(sender, id, Error(ErrorCode::kInvalidArgument, outcome.reason));
  sender.send({{"event", "stopped"},
               {"exit", exit_name(outcome.exit)},
               {"status", outcome.status},
               {"reason", outcome.reason}});
  // The control thread may sit in recvmsg; leaving through _exit skips joining it.
  std::fflush(stderr);
  ::_exit(outcome.status);
}

}  // namespace
}  // namespace lamina::worker

int main(int argc, char** argv) {
  CLI::App app{"lamina-vm: runs one VM for laminad over a control channel (not for direct use)"};
  int control_fd = -1;
  int listen_fd = -1;
  std::string drop_to;
  uint64_t address_space_limit = 0;
  app.add_option("--control-fd", control_fd, "The control channel socket (inherited)")
      ->required();
  app.add_option("--listen-fd", listen_fd,
                 "A listening socket where a restarted laminad reconnects (inherited)");
  app.add_option("--drop-to", drop_to, "UID:GID to become when started as root");
  app.add_option("--address-space-limit", address_space_limit, "RLIMIT_AS in bytes (0: none)");
  CLI11_PARSE(app, argc, argv);
  std::optional<std::pair<uid_t, gid_t>> ids;
  if (!drop_to.empty()) {
    unsigned uid = 0;
    unsigned gid = 0;
    if (std::sscanf(drop_to.c_str(), "%u:%u", &uid, &gid) != 2 || uid == 0) {
      fmt::print(stderr, "lamina-vm: --drop-to wants UID:GID with a non-zero UID\n");
      return 2;
    }
    ids = std::pair<uid_t, gid_t>{uid, gid};
  }
  return lamina::worker::run_worker(control_fd, listen_fd, ids, address_space_limit);
}
