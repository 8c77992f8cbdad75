#pragma once
// Shared pieces of the `lamina vm` verbs (vm_command.cc, vm_import_command.cc): the options
// every verb has, calling laminad with one-line failures, and JSON output.

#include <CLI/CLI.hpp>
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

// `lamina vm import` (vm_import_command.cc).
void add_vm_import_command(CLI::App& vm, const std::shared_ptr<VmOptions>& options);
// `lamina vm checkpoint`, `checkpoints`, `restore`, `checkpoint-delete`
// (vm_checkpoint_command.cc).
void add_vm_checkpoint_commands(CLI::App& vm, const std::shared_ptr<VmOptions>& options);

}  // namespace lamina::cli
