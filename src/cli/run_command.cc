#include "cli/commands.h"
#include "cli/not_built.h"

namespace lamina::cli {

void add_run_command(CLI::App& app) {
  auto* run = app.add_subcommand(
      "run", "Start one VM in the foreground with its first serial port on the terminal");
  run->footer(
      "Status: not built yet. Booting needs the built-in x86-64 CPU (issue #3) and the PC "
      "platform (issue #4).");
  // Accept any arguments so `lamina run --kernel ...` reaches the honest answer below.
  run->allow_extras();
  run->callback([] {
    report_not_built("run",
                     "booting guests needs the built-in x86-64 CPU and the PC platform, which "
                     "are in progress (issues #3 and #4)");
  });
}

}  // namespace lamina::cli
