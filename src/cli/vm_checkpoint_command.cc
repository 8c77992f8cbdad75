// `lamina vm checkpoint NAME [CPNAME]`, `checkpoints NAME`, `restore NAME CPNAME`,
// `checkpoint-delete NAME CPNAME`: laminad's checkpoints (vm_service.h) through its API.

#include <memory>
#include <string>

#include <fmt/format.h>

#include "cli/vm_support.h"

namespace lamina::cli {
namespace {

struct CheckpointArguments {
  std::string vm;
  std::string checkpoint;
};

void print_json(const nlohmann::json& value) { fmt::print("{}\n", value.dump(2)); }

std::string size_text(const nlohmann::json& figures, const char* key) {
  if (!figures.contains(key) || !figures[key].is_number_unsigned()) return "?";
  return fmt::format("{} MiB", figures[key].get<uint64_t>() >> 20);
}

}  // namespace

void add_vm_checkpoint_commands(CLI::App& vm, const std::shared_ptr<VmOptions>& options) {
  auto take = std::make_shared<CheckpointArguments>();
  auto* checkpoint = vm.add_subcommand(
      "checkpoint",
      "Take a checkpoint: a running VM's state is saved (it runs on) and each writable disk "
      "gets a differencing child, so the VM can go back to this moment");
  checkpoint->add_option("name", take->vm, "The VM")->required();
  checkpoint->add_option("checkpoint", take->checkpoint,
                         "The checkpoint's name (default: the UTC time, YYYYMMDD-HHMMSS)");
  checkpoint->callback([options, take] {
    nlohmann::json body = nlohmann::json::object();
    if (!take->checkpoint.empty()) body["name"] = take->checkpoint;
    auto result =
        call(*options, "checkpoint", "POST", fmt::format("/v1/vms/{}/checkpoints", take->vm), body);
    if (options->json) return print_json(result);
    const auto figures = result.value("saved", nlohmann::json::object());
    if (result.value("state_saved", false)) {
      fmt::print("checkpoint {} of {}: state saved ({} of RAM written), disks frozen\n",
                 result.value("name", ""), take->vm, size_text(figures, "ram_written"));
    } else {
      fmt::print("checkpoint {} of {}: disks frozen (the VM was stopped)\n",
                 result.value("name", ""), take->vm);
    }
    if (result.contains("warning")) {
      fail_verb("checkpoint", result.value("warning", ""));
    }
  });

  auto list_vm = std::make_shared<std::string>();
  auto* list = vm.add_subcommand("checkpoints", "A VM's checkpoints, oldest first");
  list->add_option("name", *list_vm, "The VM")->required();
  list->callback([options, list_vm] {
    auto result =
        call(*options, "checkpoints", "GET", fmt::format("/v1/vms/{}/checkpoints", *list_vm));
    if (options->json) return print_json(result);
    fmt::print("{:<24} {:<26} {:<6} {}\n", "CHECKPOINT", "CREATED", "STATE", "DISKS");
    for (const auto& entry : result.value("checkpoints", nlohmann::json::array())) {
      fmt::print("{:<24} {:<26} {:<6} {}\n", entry.value("name", ""), entry.value("created", ""),
                 entry.value("state_saved", false) ? "saved" : "-",
                 entry.value("disks", nlohmann::json::array()).size());
    }
  });

  auto back = std::make_shared<CheckpointArguments>();
  auto* restore = vm.add_subcommand(
      "restore",
      "Go back to a checkpoint (the VM must be stopped): its disks return to the checkpoint's "
      "and, when the checkpoint saved a running VM, it runs on from that moment");
  restore->add_option("name", back->vm, "The VM")->required();
  restore->add_option("checkpoint", back->checkpoint, "The checkpoint")->required();
  restore->callback([options, back] {
    auto result =
        call(*options, "restore", "POST",
             fmt::format("/v1/vms/{}/checkpoints/{}/restore", back->vm, back->checkpoint));
    if (options->json) return print_json(result);
    fmt::print("restored {} to checkpoint {} ({})\n", back->vm, back->checkpoint,
               result.value("state", ""));
  });

  auto drop = std::make_shared<CheckpointArguments>();
  auto* remove = vm.add_subcommand(
      "checkpoint-delete",
      "Delete a checkpoint: its saved state goes, and its disk changes are merged where nothing "
      "else needs them (a merge needs the VM stopped)");
  remove->add_option("name", drop->vm, "The VM")->required();
  remove->add_option("checkpoint", drop->checkpoint, "The checkpoint")->required();
  remove->callback([options, drop] {
    auto result = call(*options, "checkpoint-delete", "DELETE",
                       fmt::format("/v1/vms/{}/checkpoints/{}", drop->vm, drop->checkpoint));
    if (options->json) return print_json(result);
    fmt::print("deleted checkpoint {} of {} ({} disk(s) merged)\n", drop->checkpoint, drop->vm,
               result.value("merged", nlohmann::json::array()).size());
  });
}

}  // namespace lamina::cli
