#pragma once
// Registration of the `lamina` subcommands. Each adds its subcommand to the app and sets the
// callback that runs it; a callback reports failure by throwing CLI::RuntimeError(exit_code)
// after printing a one-line reason to stderr.

#include <CLI/CLI.hpp>

namespace lamina::cli {

void add_run_command(CLI::App& app);
void add_disk_command(CLI::App& app);
void add_vm_command(CLI::App& app);
void add_switch_command(CLI::App& app);

}  // namespace lamina::cli
