// VmService's checkpoints (vm_service.h): the order of the steps, so that a failure at any step
// leaves the VM as it was (running on its old disks, or stopped) and no half-written file.
//   checkpoint of a running VM: the worker saves the state into a temporary file and stops
//     (nothing is written after the saved instant) -> rename -> a differencing child per
//     writable disk -> one inventory transaction (checkpoint row + definition on the children)
//     -> the VM continues from the state on the children. Before the transaction, any failure
//     removes the children and the state and continues the VM on its old disks.
//   restore (VM stopped): new children of the frozen images -> definition switched -> the VM
//     continues from the saved state (if any); the old current disks are removed only then,
//     when no checkpoint froze them.
//   delete: the row goes; the state file and images nothing depends on any more are removed;
//     a frozen image with the VM's current disk as its only child gets that child merged in.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include "mgmt/checkpoint_disks.h"
#include "mgmt/vm_service.h"
#include "storage/image_operations.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::mgmt {
namespace {

// The worker writes guest RAM (up to its whole size) before it answers.
constexpr auto kSaveTimeout = std::chrono::minutes(10);
constexpr auto kWorkerExitTimeout = std::chrono::seconds(60);

ServiceError missing_checkpoint(const std::string& vm, const std::string& name) {
  return {404, "checkpoint", fmt::format("{} has no checkpoint named {}", vm, name)};
}

// A VM and one of its checkpoints, or the 404 naming which one is missing.
ServiceResult<std::pair<VmRecord, CheckpointRecord>> find_checkpoint_of(
    Inventory& inventory, const std::string& vm, const std::string& checkpoint) {
  auto found = inventory.find(vm);
  if (!found) return std::unexpected(ServiceError::internal(found.error().message()));
  if (!*found) return std::unexpected(ServiceError::no_vm(vm));
  auto record = inventory.find_checkpoint(vm, checkpoint);
  if (!record) return std::unexpected(ServiceError::internal(record.error().message()));
  if (!*record) return std::unexpected(missing_checkpoint(vm, checkpoint));
  return std::pair{**found, **record};
}

void remove_file(const std::string& path) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

void sync_folder(const std::filesystem::path& folder) {
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// The writable disks of a definition: index in "disks" -> parsed spec.
struct DiskEntry {
  size_t index;
  std::string text;
  virtio::DiskSpec spec;
};

Result<std::vector<DiskEntry>> definition_disks(const nlohmann::json& definition) {
  std::vector<DiskEntry> disks;
  if (!definition.contains("disks")) return disks;
  for (size_t index = 0; index < definition["disks"].size(); ++index) {
    const auto& text = definition["disks"][index];
    if (!text.is_string()) return fail(ErrorCode::kCorrupt, "a disk entry is not a string");
    auto spec = virtio::parse_disk_spec(text.get<std::string>());
    if (!spec) return fail(spec.error());
    disks.push_back({index, text.get<std::string>(), std::move(*spec)});
  }
  return disks;
}

nlohmann::json describe_checkpoint(const CheckpointRecord& checkpoint) {
  return {{"vm", checkpoint.vm},
          {"name", checkpoint.name},
          {"created", checkpoint.created},
          {"state_saved", !checkpoint.state_file.empty()},
          {"disks", checkpoint.disks}};
}

}  // namespace

ServiceResult<nlohmann::json> VmService::checkpoints(const std::string& name) {
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error().message()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  auto records = inventory_->checkpoints(name);
  if (!records) return std::unexpected(ServiceError::internal(records.error().message()));
  nlohmann::json list = nlohmann::json::array();
  for (const CheckpointRecord& record : *records) list.push_back(describe_checkpoint(record));
  return nlohmann::json{{"vm", name}, {"checkpoints", list}};
}

ServiceResult<nlohmann::json> VmService::checkpoint(const std::string& name,
                                                    const nlohmann::json& body) {
  if (!body.is_object())
    return std::unexpected(ServiceError{400, "", "the body must be an object"});
  for (const auto& [key, value] : body.items()) {
    if (key != "name") return std::unexpected(ServiceError{400, key, "unknown field"});
  }
  std::string checkpoint_name;
  if (body.contains("name")) {
    if (!body["name"].is_string() || !valid_vm_name(body["name"].get<std::string>())) {
      return std::unexpected(
          ServiceError{400, "name", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,62}"});
    }
    checkpoint_name = body["name"].get<std::string>();
  } else {
    checkpoint_name =
        fmt::format("{:%Y%m%d-%H%M%S}",
                    std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()));
  }
  std::lock_guard serial(checkpoint_mutex_);
  auto found = inventory_->find(name);
  if (!found) return std::unexpected(ServiceError::internal(found.error().message()));
  if (!*found) return std::unexpected(ServiceError::no_vm(name));
  VmRecord record = **found;
  if (auto existing = inventory_->find_checkpoint(name, checkpoint_name); !existing || *existing) {
    if (!existing) return std::unexpected(ServiceError::internal(existing.error().message()));
    return std::unexpected(
        ServiceError::conflict(fmt::format("{} has a checkpoint named {} already", name, checkpoint_name)));
  }
  auto disks = definition_disks(record.definition);
  if (!disks) return std::unexpected(ServiceError::internal(disks.error().message()));
  for (const DiskEntry& disk : *disks) {
    if (disk.spec.read_only) continue;
    if (auto checked = check_checkpoint_format(disk.spec.path); !checked) {
      return std::unexpected(ServiceError{422, "disks", checked.error().message()});
    }
  }

  WorkerProcess* worker = nullptr;
  bool was_paused = false;
  {
    std::lock_guard lock(mutex_);
    if (auto running = running_.find(name); running != running_.end()) {
      if (running->second.state != "running" && running->second.state != "paused") {
        return std::unexpected(ServiceError::conflict(fmt::format("{} is {}", name, running->second.state)));
      }
      worker = running->second.worker.get();
      was_paused = running->second.state == "paused";
    }
  }
  const std::filesystem::path folder = vm_dir(name) / "checkpoints";
  std::error_code error;
  std::filesystem::create_directories(folder, error);
  const std::string state_path = (folder / (checkpoint_name + ".state")).string();

  // 1. A running VM saves its state (a temporary name until it is whole) and stops.
  std::string saved_state;
  nlohmann::json saved_figures = nlohmann::json::object();
  if (worker) {
    std::string temporary = (folder / ("." + checkpoint_name + ".state.XXXXXX")).string();
    UniqueFd file(::mkostemp(temporary.data(), O_CLOEXEC));
    if (!file) {
      return std::unexpected(ServiceError::internal(fmt::format("{}: {}", temporary, std::strerror(errno))));
    }
    const int fds[] = {file.get()};
    auto reply = worker->request("save", kSaveTimeout, fds);
    if (!reply || !reply->value("ok", false)) {
      remove_file(temporary);
      const std::string why =
          reply ? reply->value("error", std::string("no reason given")) : reply.error().message();
      return std::unexpected(ServiceError{
          502, "", fmt::format("{} could not save its state (it runs on): {}", name, why)});
    }
    for (const char* key : {"ram_bytes", "ram_written", "file_bytes"}) {
      if (reply->contains(key) && (*reply)[key].is_number_unsigned())
        saved_figures[key] = (*reply)[key];
    }
    file.reset();
    // The worker stops itself once saved; wait until laminad has seen it go.
    {
      std::unique_lock lock(mutex_);
      if (!changed_.wait_for(lock, kWorkerExitTimeout, [&] { return !running_.contains(name); })) {
        lock.unlock();
        (void)kill(name);
        lock.lock();
        changed_.wait_for(lock, kWorkerExitTimeout, [&] { return !running_.contains(name); });
      }
    }
    if (::rename(temporary.c_str(), state_path.c_str()) != 0) {
      remove_file(temporary);
      return std::unexpected(ServiceError::internal(fmt::format("{}: {}", state_path, std::strerror(errno))));
    }
    sync_folder(folder);
    saved_state = state_path;
  }
  // Continues the VM from the saved state on the definition in the inventory (after a failure:
  // the old disks, unchanged since the save).
  auto continue_vm = [&]() -> ServiceResult<void> {
    if (saved_state.empty()) return {};
    UniqueFd state(::open(saved_state.c_str(), O_RDONLY | O_CLOEXEC));
    if (!state)
      return std::unexpected(ServiceError::internal(fmt::format("{}: {}", saved_state, std::strerror(errno))));
    auto started = start(name, state.get());
    if (!started) return std::unexpected(started.error());
    // A paused VM is paused again (its vCPUs ran for the moment of the worker's start).
    if (was_paused) (void)control(name, "pause");
    return {};
  };
  auto undo = [&](std::vector<std::string>& children, const ServiceError& why) {
    for (const std::string& child : children) remove_file(child);
    (void)continue_vm();
    if (!saved_state.empty()) remove_file(saved_state);
    return std::unexpected(why);
  };

  // 2. Each writable disk is frozen: the VM goes on on a differencing child of it.
  CheckpointRecord checkpoint{.vm = name,
                              .name = checkpoint_name,
                              .created = utc_now(),
                              .state_file = saved_state,
                              .disks = nlohmann::json::array()};
  VmRecord updated = record;
  std::vector<std::string> children;
  for (const DiskEntry& disk : *disks) {
    if (disk.spec.read_only) {
      checkpoint.disks.push_back(nullptr);
      continue;
    }
    const std::string child = child_image_path(disk.spec.path, checkpoint_name);
    if (auto made = storage::create_differencing(child, disk.spec.path, false); !made) {
      return undo(children, ServiceError{500, "disks",
                                         made.error().with_context("checkpoint disk").message()});
    }
    children.push_back(child);
    checkpoint.disks.push_back(disk.spec.path);
    updated.definition["disks"][disk.index] = replace_disk_path(disk.text, child);
  }
  // 3. One transaction: the checkpoint and the definition on the children.
  if (auto added = inventory_->add_checkpoint(checkpoint, updated); !added) {
    return undo(children, ServiceError::internal(added.error().message()));
  }
  log_event(name, "checkpoint",
            {{"checkpoint", checkpoint_name}, {"state_saved", !saved_state.empty()}});
  // 4. The VM runs on from the saved instant, on the children.
  nlohmann::json reply = describe_checkpoint(checkpoint);
  reply["saved"] = saved_figures;
  if (auto continued = continue_vm(); !continued) {
    reply["warning"] = fmt::format("the checkpoint was taken, but {} did not continue: {}", name,
                                   continued.error().message);
  }
  return reply;
}

ServiceResult<nlohmann::json> VmService::restore(const std::string& name,
                                                 const std::string& checkpoint_name) {
  std::lock_guard serial(checkpoint_mutex_);
  auto found = find_checkpoint_of(*inventory_, name, checkpoint_name);
  if (!found) return std::unexpected(found.error());
  VmRecord record = found->first;
  const CheckpointRecord* checkpoint = &found->second;
  {
    std::lock_guard lock(mutex_);
    if (running_.contains(name)) {
      return std::unexpected(ServiceError::conflict(
          fmt::format("{} is {}: stop it before restoring a checkpoint (lamina vm stop {})", name,
                      running_[name].state, name)));
    }
  }
  auto disks = definition_disks(record.definition);
  if (!disks) return std::unexpected(ServiceError::internal(disks.error().message()));
  const nlohmann::json& frozen = checkpoint->disks;
  if (!frozen.is_array() || frozen.size() != disks->size()) {
    return std::unexpected(ServiceError::conflict(
        fmt::format("{}'s disks changed since checkpoint {} was taken; it cannot be restored", name,
                    checkpoint_name)));
  }
  UniqueFd state;
  if (!checkpoint->state_file.empty()) {
    state = UniqueFd(::open(checkpoint->state_file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!state) {
      return std::unexpected(
          ServiceError::internal(fmt::format("checkpoint {}'s state {}: {}", checkpoint_name,
                               checkpoint->state_file, std::strerror(errno))));
    }
  }
  // New children of the frozen images; the current disks are dropped once the VM is on them.
  VmRecord updated = record;
  std::vector<std::string> children;
  std::vector<std::string> replaced;
  auto discard_children = [&] {
    for (const std::string& child : children) remove_file(child);
  };
  for (const DiskEntry& disk : *disks) {
    if (frozen[disk.index].is_null()) continue;
    if (!frozen[disk.index].is_string())
      return std::unexpected(ServiceError::internal("a corrupt checkpoint row"));
    const std::string parent = frozen[disk.index].get<std::string>();
    const std::string child = child_image_path(parent, checkpoint_name);
    if (auto made = storage::create_differencing(child, parent, false); !made) {
      discard_children();
      return std::unexpected(ServiceError::internal(made.error().with_context("restore disk").message()));
    }
    children.push_back(child);
    replaced.push_back(disk.spec.path);
    updated.definition["disks"][disk.index] = replace_disk_path(disk.text, child);
  }
  if (auto saved = inventory_->update(updated); !saved) {
    discard_children();
    return std::unexpected(ServiceError::internal(saved.error().message()));
  }
  if (state) {
    if (auto started = start(name, state.get()); !started) {
      (void)inventory_->update(record);
      discard_children();
      return std::unexpected(started.error());
    }
  }
  // The disks the VM was on are its discarded present, unless a checkpoint froze them.
  auto all = inventory_->checkpoints(name);
  std::set<std::string> kept;
  if (all) {
    for (const CheckpointRecord& other : *all) {
      for (const auto& disk : other.disks) {
        if (disk.is_string()) kept.insert(disk.get<std::string>());
      }
    }
  }
  nlohmann::json removed = nlohmann::json::array();
  for (const std::string& old : replaced) {
    if (!all || kept.contains(old) || old.find('@') == std::string::npos) continue;
    remove_file(old);
    removed.push_back(old);
  }
  log_event(name, "restored", {{"checkpoint", checkpoint_name}});
  nlohmann::json reply = describe(updated);
  reply["restored"] = checkpoint_name;
  reply["disks_removed"] = removed;
  return reply;
}

ServiceResult<nlohmann::json> VmService::delete_checkpoint(const std::string& name,
                                                           const std::string& checkpoint_name) {
  std::lock_guard serial(checkpoint_mutex_);
  auto found = find_checkpoint_of(*inventory_, name, checkpoint_name);
  if (!found) return std::unexpected(found.error());
  VmRecord record = found->first;
  const CheckpointRecord* checkpoint = &found->second;
  auto all = inventory_->checkpoints(name);
  if (!all) return std::unexpected(ServiceError::internal(all.error().message()));
  auto disks = definition_disks(record.definition);
  if (!disks) return std::unexpected(ServiceError::internal(disks.error().message()));
  bool running;
  {
    std::lock_guard lock(mutex_);
    running = running_.contains(name);
  }

  // Per frozen image: who depends on it (the VM's current disks, other checkpoints' images).
  std::vector<std::string> dependents_of_all;
  for (const DiskEntry& disk : *disks) dependents_of_all.push_back(disk.spec.path);
  for (const CheckpointRecord& other : *all) {
    if (other.name == checkpoint_name) continue;
    for (const auto& disk : other.disks) {
      if (disk.is_string()) dependents_of_all.push_back(disk.get<std::string>());
    }
  }
  struct Plan {
    std::string frozen;
    std::string merge_child;  // the VM's current disk, merged into `frozen`
    size_t disk_index = 0;
    bool remove_frozen = false;
  };
  std::vector<Plan> plans;
  for (const auto& disk : checkpoint->disks) {
    if (!disk.is_string()) continue;
    Plan plan;
    plan.frozen = disk.get<std::string>();
    bool frozen_elsewhere = false;
    std::vector<std::string> children;
    for (const std::string& candidate : dependents_of_all) {
      if (candidate == plan.frozen) {
        frozen_elsewhere = true;
        continue;
      }
      auto parent = image_parent(candidate);
      std::error_code ignored;
      if (parent && *parent && std::filesystem::equivalent(**parent, plan.frozen, ignored)) {
        children.push_back(candidate);
      }
    }
    if (frozen_elsewhere) continue;
    if (children.empty()) {
      // Nothing reads it any more; an image Lamina made for a checkpoint goes.
      plan.remove_frozen = plan.frozen.find('@') != std::string::npos;
    } else if (children.size() == 1) {
      for (const DiskEntry& current : *disks) {
        if (current.spec.path == children.front()) {
          plan.merge_child = children.front();
          plan.disk_index = current.index;
        }
      }
    }
    if (!plan.merge_child.empty() && running) {
      return std::unexpected(ServiceError::conflict(fmt::format(
          "{} is running: deleting checkpoint {} merges {} into {}, which needs the VM stopped",
          name, checkpoint_name, plan.merge_child, plan.frozen)));
    }
    plans.push_back(plan);
  }
  // Merges first (each leaves the child reading the same data, so a failure changes nothing
  // the guest sees), then one transaction, then the files nothing refers to.
  VmRecord updated = record;
  nlohmann::json merged = nlohmann::json::array();
  for (const Plan& plan : plans) {
    if (plan.merge_child.empty()) continue;
    auto done = storage::merge_image(plan.merge_child, {});
    if (!done) {
      return std::unexpected(
          ServiceError::internal(done.error().with_context("merging " + plan.merge_child).message()));
    }
    const DiskEntry& current = (*disks)[plan.disk_index];
    updated.definition["disks"][plan.disk_index] = replace_disk_path(current.text, plan.frozen);
    merged.push_back({{"from", plan.merge_child}, {"into", plan.frozen}, {"bytes", *done}});
  }
  const bool definition_changed = !merged.empty();
  if (auto removed = inventory_->remove_checkpoint(name, checkpoint_name,
                                                   definition_changed ? &updated : nullptr);
      !removed) {
    return std::unexpected(ServiceError::internal(removed.error().message()));
  }
  nlohmann::json removed_files = nlohmann::json::array();
  if (!checkpoint->state_file.empty()) {
    remove_file(checkpoint->state_file);
    removed_files.push_back(checkpoint->state_file);
  }
  for (const Plan& plan : plans) {
    if (!plan.merge_child.empty()) {
      remove_file(plan.merge_child);
      removed_files.push_back(plan.merge_child);
    }
    if (plan.remove_frozen) {
      remove_file(plan.frozen);
      removed_files.push_back(plan.frozen);
    }
  }
  log_event(name, "checkpoint_deleted", {{"checkpoint", checkpoint_name}});
  return nlohmann::json{{"vm", name},
                        {"checkpoint", checkpoint_name},
                        {"deleted", true},
                        {"merged", merged},
                        {"files_removed", removed_files}};
}

}  // namespace lamina::mgmt
