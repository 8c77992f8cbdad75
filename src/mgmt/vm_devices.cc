// VmService's hotplug (vm_service.h): attach and detach of disks and network cards. The order
// of the steps keeps a failure from changing anything:
//   attach: the new definition (old + the device) is checked as a whole (files, the same image
//     twice) -> a running VM: laminad opens the image or port (lock taken: an image in use is
//     refused here) -> the worker plugs it in -> the definition is stored. A stopped VM only
//     gets the definition.
//   detach: the device is found (id or path) -> a running VM: the worker asks the guest, waits
//     for its eject, flushes and closes the image -> the definition is stored without it.

#include <fmt/format.h>

#include "base/size.h"
#include "machine/host_grants.h"
#include "machine/vm_definition.h"
#include "mgmt/vm_service.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::mgmt {
namespace {

// A device's place in a definition: "disks" or "nets", and its index there.
struct DeviceRef {
  std::string list;
  size_t index = 0;
};

std::string id_of(const std::string& list, size_t index) {
  return fmt::format("{}{}", list == "disks" ? "disk" : "net", index);
}

// The path of a disk spec ("PATH[,options]", ",," escaping a comma).
std::string disk_path(const std::string& spec) {
  auto parsed = virtio::parse_disk_spec(spec);
  return parsed ? parsed->path : spec;
}

std::optional<DeviceRef> find_device(const nlohmann::json& definition, const std::string& device) {
  for (const std::string list : {"disks", "nets"}) {
    if (!definition.contains(list) || !definition[list].is_array()) continue;
    for (size_t index = 0; index < definition[list].size(); ++index) {
      const auto& spec = definition[list][index];
      if (id_of(list, index) == device ||
          (list == "disks" && spec.is_string() && disk_path(spec.get<std::string>()) == device)) {
        return DeviceRef{list, index};
      }
    }
  }
  return std::nullopt;
}

std::string device_names(const nlohmann::json& definition) {
  std::string names;
  for (const auto& device : VmService::devices_of(definition)) {
    names += (names.empty() ? "" : ", ") + device["id"].get<std::string>();
  }
  return names.empty() ? "none" : names;
}

}  // namespace

nlohmann::json VmService::devices_of(const nlohmann::json& definition) {
  nlohmann::json devices = nlohmann::json::array();
  for (const std::string list : {"disks", "nets"}) {
    if (!definition.contains(list) || !definition[list].is_array()) continue;
    for (size_t index = 0; index < definition[list].size(); ++index) {
      devices.push_back({{"id", id_of(list, index)},
                         {"kind", list == "disks" ? "disk" : "net"},
                         {"spec", definition[list][index]}});
    }
  }
  return devices;
}

ServiceResult<nlohmann::json> VmService::attach(const std::string& name,
                                                const nlohmann::json& body) {
  if (!body.is_object() || body.size() != 1 || !(body.contains("disk") || body.contains("net"))) {
    return std::unexpected(ServiceError{
        400, "", "the body must be {\"disk\": \"PATH[,readonly]\"} or {\"net\": \"switch:NAME\"}"});
  }
  const bool disk = body.contains("disk");
  const std::string field = disk ? "disk" : "net";
  if (!body[field].is_string()) {
    return std::unexpected(ServiceError{400, field, "must be a string"});
  }
  std::string spec = body[field].get<std::string>();
  std::lock_guard one_at_a_time(hotplug_mutex_);
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError{500, "", found.error().message()});
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  VmRecord record = **found;
  // The whole definition without the host (a running VM's own images are locked by its
  // worker), the one host rule between disks (an image is attached twice only read-only),
  // then the device against the host (its file, its format, its lock).
  const std::string list = disk ? "disks" : "nets";
  record.definition[list].push_back(spec);
  auto config =
      machine::vm_config_from_definition(record.definition, machine::HostChecks::kNone);
  if (!config) return std::unexpected(ServiceError{400, field, config.error().message()});
  if (disk) {
    const virtio::DiskSpec& added = config->disks.back();
    for (size_t index = 0; index + 1 < config->disks.size(); ++index) {
      const virtio::DiskSpec& other = config->disks[index];
      std::error_code error;
      if (std::filesystem::equivalent(added.path, other.path, error) &&
          !(added.read_only && other.read_only)) {
        return std::unexpected(ServiceError{
            400, field,
            fmt::format("{} is attached to {} already (as {}); an image may be attached twice "
                        "only read-only",
                        added.path, name, id_of("disks", index))});
      }
    }
  }
  auto alone = machine::vm_config_from_definition({{list, {spec}}});
  if (!alone) return std::unexpected(ServiceError{400, field, alone.error().message()});
  const std::string id = id_of(list, record.definition[list].size() - 1);
  // A card without a MAC gets one here, kept in the definition: the worker opens the switch
  // port laminad connected for this address, and the guest sees the same card after a restart.
  if (!disk && spec.find("mac=") == std::string::npos) {
    spec += ",mac=" + config->networks.back().mac.to_string();
    record.definition[list].back() = spec;
  }

  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) {
      if (!running->second.worker) {
        return std::unexpected(ServiceError::conflict(fmt::format("{} is starting", name)));
      }
      worker = running->second.worker.get();
    }
  }
  nlohmann::json detail{{"device", id}, {field, spec}};
  if (worker != nullptr) {
    machine::VmConfig device;
    if (disk) {
      device.disks.push_back(config->disks.back());
    } else {
      device.networks.push_back(config->networks.back());
      if (auto switches = start_switches({{"nets", {spec}}}); !switches) {
        return std::unexpected(switches.error());
      }
    }
    net::SwitchConnectOptions switch_options;
    switch_options.daemon = {.program = options_.lamina_program,
                             .arguments = {"--idle-exit", "10"}};
    // laminad opens (and locks) what the worker will use; the worker opens no path.
    auto grants = machine::grant_device(device, name, switch_options);
    if (!grants) return std::unexpected(ServiceError{422, field, grants.error().message()});
    nlohmann::json request{{"op", "attach"}, {field, spec}, {"grants", grants->to_json()}};
    const std::vector<int> fds = grants->descriptors();
    auto reply = worker->request(std::move(request), std::chrono::seconds(10), fds, nullptr);
    if (!reply) return std::unexpected(ServiceError{422, field, reply.error().message()});
    detail["slot"] = reply->value("slot", 0);
  }
  if (auto updated = inventory_->update(record); !updated) {
    return std::unexpected(ServiceError{500, "", updated.error().message()});
  }
  log_event(name, "attached", detail);
  auto described = get(name);
  if (described) (*described)["attached"] = id;
  return described;
}

ServiceResult<nlohmann::json> VmService::detach(const std::string& name, const std::string& device,
                                                std::chrono::milliseconds timeout) {
  std::lock_guard one_at_a_time(hotplug_mutex_);
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError{500, "", found.error().message()});
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  VmRecord record = **found;
  const auto where = find_device(record.definition, device);
  if (!where) {
    return std::unexpected(ServiceError{
        404, "device", fmt::format("{} has no device {} (its devices: {})", name, device,
                                   device_names(record.definition))});
  }
  const std::string id = id_of(where->list, where->index);
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) {
      if (!running->second.worker) {
        return std::unexpected(ServiceError::conflict(fmt::format("{} is starting", name)));
      }
      if (running->second.state == "paused") {
        return std::unexpected(ServiceError{
            409, "", fmt::format("{} is paused, so its guest cannot release {}: resume it first",
                                 name, id)});
      }
      worker = running->second.worker.get();
    }
  }
  nlohmann::json detail{{"device", id}, {"spec", record.definition[where->list][where->index]}};
  if (worker != nullptr) {
    const std::string kind = where->list == "disks" ? "disk" : "net";
    nlohmann::json refusal;
    auto reply = worker->request(
        nlohmann::json{{"op", "detach"}, {kind, where->index}, {"timeout_ms", timeout.count()}},
        timeout + std::chrono::seconds(10), {}, &refusal);
    if (!reply && !refusal.value("detached", false)) {
      if (refusal.value("timed_out", false)) {
        return std::unexpected(ServiceError{
            409, "device",
            fmt::format("the guest of {} did not release {} within {} s (it has no ACPI PCI "
                        "hotplug support, or it keeps the device in use); {} stays attached",
                        name, id, timeout.count() / 1000.0, id)});
      }
      return std::unexpected(ServiceError{502, "", reply.error().message()});
    }
    if (!reply) detail["warning"] = refusal.value("error", "");
  }
  auto& list = record.definition[where->list];
  list.erase(list.begin() + static_cast<ptrdiff_t>(where->index));
  if (list.empty()) record.definition.erase(where->list);
  if (auto updated = inventory_->update(record); !updated) {
    return std::unexpected(ServiceError{500, "", updated.error().message()});
  }
  log_event(name, "detached", detail);
  auto described = get(name);
  if (described) (*described)["detached"] = id;
  return described;
}

ServiceResult<nlohmann::json> VmService::resize(const std::string& name,
                                                const nlohmann::json& body) {
  if (!body.is_object() || body.empty()) {
    return std::unexpected(
        ServiceError{400, "", "the body must be {\"cpus\": N} and/or {\"memory\": \"SIZE\"}"});
  }
  std::optional<uint32_t> cpus;
  std::optional<uint64_t> memory;
  for (const auto& [key, value] : body.items()) {
    if (key == "cpus") {
      if (!value.is_number_unsigned()) {
        return std::unexpected(ServiceError{400, key, "must be a whole number"});
      }
      cpus = value.get<uint32_t>();
    } else if (key == "memory") {
      auto bytes = parse_size(value.is_string() ? value.get<std::string>() : std::string());
      if (!bytes) return std::unexpected(ServiceError{400, key, "must be a size like \"512M\""});
      memory = *bytes;
    } else {
      return std::unexpected(ServiceError{400, key, "unknown field"});
    }
  }
  std::lock_guard one_at_a_time(hotplug_mutex_);
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError{500, "", found.error().message()});
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  VmRecord record = **found;
  auto config = machine::vm_config_from_definition(record.definition, machine::HostChecks::kNone);
  if (!config) return std::unexpected(ServiceError{500, "", config.error().message()});
  bool is_running = false;
  {
    std::lock_guard lock(mutex_);
    is_running = running_.contains(name);
  }
  const uint32_t current = config->cpus;
  // A running VM moves within its headroom; a stopped one takes any count its max allows.
  const uint32_t maximum =
      config->max_cpus != 0 ? config->max_cpus : is_running ? current : machine::kMaxCpus;
  if (cpus && *cpus != current && is_running && config->max_cpus <= 1) {
    return std::unexpected(ServiceError{
        400, "cpus",
        fmt::format("{} was created without vCPU headroom; give it --cpus N,max=M (stopped) "
                    "first",
                    name)});
  }
  if (cpus && (*cpus < 1 || *cpus > maximum)) {
    return std::unexpected(ServiceError{
        400, "cpus", fmt::format("{} vCPUs: {} takes 1 to {}{}", *cpus, name, maximum,
                                 config->max_cpus != 0 ? " (its max_cpus)" : "")});
  }
  if (memory && config->max_memory_bytes != 0 &&
      (*memory > config->max_memory_bytes || *memory % (2 << 20) != 0)) {
    return std::unexpected(ServiceError{
        400, "memory", fmt::format("{} MiB: {} takes whole 2 MiB up to {} MiB (its max)",
                                   *memory >> 20, name, config->max_memory_bytes >> 20)});
  }
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) {
      if (!running->second.worker) {
        return std::unexpected(ServiceError::conflict(fmt::format("{} is starting", name)));
      }
      if (running->second.state == "paused" && cpus && *cpus < current) {
        return std::unexpected(ServiceError{
            409, "", fmt::format("{} is paused, so its guest cannot release vCPUs: resume it "
                                 "first",
                                 name)});
      }
      worker = running->second.worker.get();
    }
  }
  // With headroom the boot RAM stays (the machine's shape, which a checkpoint restores) and
  // memory_target says what the guest is asked to use; the worker, which knows what the VM
  // booted with, refuses less than that. A stopped VM without headroom just boots with it.
  nlohmann::json detail = nlohmann::json::object();
  std::optional<ServiceError> failure;
  if (memory && config->max_memory_bytes == 0) {
    if (worker != nullptr) {
      return std::unexpected(ServiceError{
          400, "memory",
          fmt::format("{} was created without memory headroom; give it --memory SIZE,max=MAX "
                      "(stopped) first",
                      name)});
    }
    record.definition["memory"] = fmt::format("{}M", *memory >> 20);
  } else if (memory) {
    if (worker != nullptr) {
      auto reply = worker->request(nlohmann::json{{"op", "set_memory"}, {"bytes", *memory}},
                                   std::chrono::seconds(5), {}, nullptr);
      if (!reply) return std::unexpected(ServiceError{400, "memory", reply.error().message()});
    } else if (*memory < config->memory_bytes) {
      // Stopped: the boot RAM itself may shrink.
      record.definition["memory"] =
          fmt::format("{}M,max={}M", *memory >> 20, config->max_memory_bytes >> 20);
    }
    if (*memory > config->memory_bytes) {
      record.definition["memory_target"] = fmt::format("{}M", *memory >> 20);
    } else {
      record.definition.erase("memory_target");
    }
  }
  if (cpus && worker != nullptr) {
    constexpr int64_t kTimeoutMs = 10'000;
    nlohmann::json refusal;
    auto reply = worker->request(
        nlohmann::json{{"op", "set_vcpus"}, {"vcpus", *cpus}, {"timeout_ms", kTimeoutMs}},
        std::chrono::milliseconds(kTimeoutMs * 64 + 10'000), {}, &refusal);
    const nlohmann::json& answer = reply ? *reply : refusal;
    if (!answer.contains("vcpus") || !answer["vcpus"].is_number_unsigned()) {
      return std::unexpected(ServiceError{502, "", reply ? "the worker said no vCPU count"
                                                         : reply.error().message()});
    }
    // What the worker reached is what the VM has, also when it stopped early.
    record.definition["cpus"] = answer["vcpus"].get<uint32_t>();
    if (!reply) failure = ServiceError{409, "cpus", refusal.value("error", "refused")};
  } else if (cpus) {
    record.definition["cpus"] = *cpus;
  }
  if (record.definition != (**found).definition) {
    if (auto updated = inventory_->update(record); !updated) {
      return std::unexpected(ServiceError{500, "", updated.error().message()});
    }
    detail["cpus"] = record.definition.value("cpus", 1);
    detail["memory"] = record.definition.value("memory_target", record.definition.value("memory", ""));
    log_event(name, "resized", detail);
  }
  if (failure) return std::unexpected(*failure);
  return get(name);
}

Result<void> VmService::reconnect_card(const std::string& name, const net::MacAddress& mac) {
  std::lock_guard one_at_a_time(hotplug_mutex_);
  auto found = inventory_->find(name);
  if (!found) return fail(found.error());
  if (!*found) return fail(ErrorCode::kNotFound, fmt::format("no VM named {}", name));
  const VmRecord& record = **found;
  auto config = machine::vm_config_from_definition(record.definition, machine::HostChecks::kNone);
  if (!config) return fail(config.error());
  size_t index = 0;
  while (index < config->networks.size() && config->networks[index].mac != mac) ++index;
  if (index == config->networks.size() || !record.definition.contains("nets") ||
      index >= record.definition["nets"].size()) {
    return fail(ErrorCode::kNotFound, fmt::format("{} has no card with MAC {}", name, mac.to_string()));
  }
  WorkerProcess* worker = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) worker = running->second.worker.get();
  }
  if (worker == nullptr) return fail(ErrorCode::kNotFound, fmt::format("{} is not running", name));
  const std::string spec = record.definition["nets"][index].get<std::string>();
  if (auto switches = start_switches({{"nets", {spec}}}); !switches) {
    return fail(ErrorCode::kIo, switches.error().message);
  }
  machine::VmConfig device;
  device.networks.push_back(config->networks[index]);
  net::SwitchConnectOptions switch_options;
  switch_options.daemon = {.program = options_.lamina_program, .arguments = {"--idle-exit", "10"}};
  auto grants = machine::grant_device(device, name, switch_options);
  if (!grants) return fail(grants.error());
  const std::vector<int> fds = grants->descriptors();
  auto reply = worker->request(
      nlohmann::json{{"op", "reconnect_net"}, {"mac", mac.to_string()}, {"grants", grants->to_json()}},
      std::chrono::seconds(10), fds, nullptr);
  if (!reply) return fail(reply.error());
  return {};
}

}  // namespace lamina::mgmt
