#include "cli/commands.h"
#include "cli/not_built.h"

namespace lamina::cli {

void add_vm_command(CLI::App& app) {
  auto* vm = app.add_subcommand("vm", "Manage VMs through the laminad management service");
  vm->footer("Status: not built yet: laminad, the management service, does not exist yet.");
  vm->allow_extras();
  vm->callback([] {
    report_not_built("vm", "the management service laminad does not exist yet");
  });
}

}  // namespace lamina::cli
