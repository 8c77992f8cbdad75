#pragma once
// Shared pieces of the `lamina vm` verbs (vm_command.cc, vm_import_command.cc): the options
// every verb has, calling laminad with one-line failures, and JSON output.

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lamina::cli {

struct VmOptions {
  std::string connect;
  bool json = false;
};

// Prints "lamina vm VERB: message" and throws CLI::RuntimeError(status).
[[noreturn]] void fail_verb(std::string_view verb, std::string_view message, int status = 1);

// Calls the API; a 4xx/5xx answer ends the command with laminad's message (and the field).
nlohmann::json call(const VmOptions& options, std::string_view verb, const std::string& method,
                    const std::string& target, const nlohmann::json& body = nullptr);

// Follows the event stream ("/v1/events/stream?" + query), handing each event to `on_event`
// until it returns false; a refused or broken stream ends the command with the reason.
void follow_events(const VmOptions& options, std::string_view verb, const std::string& query,
                   const std::function<bool(const nlohmann::json&)>& on_event);

// `lamina vm import` (vm_import_command.cc).
void add_vm_import_command(CLI::App& vm, const std::shared_ptr<VmOptions>& options);
// `lamina vm checkpoint`, `checkpoints`, `restore`, `checkpoint-delete`
// (vm_checkpoint_command.cc).
void add_vm_checkpoint_commands(CLI::App& vm, const std::shared_ptr<VmOptions>& options);
// `lamina vm migrate` (vm_migrate_command.cc).
void add_vm_migrate_command(CLI::App& vm, const std::shared_ptr<VmOptions>& options);

}  // namespace lamina::cli
