#include "cli/commands.h"
#include "cli/not_built.h"

namespace lamina::cli {

void add_disk_command(CLI::App& app) {
  auto* disk = app.add_subcommand(
      "disk", "Create, inspect, check and convert virtual disk images (VHD, VHDX, VMDK, raw)");
  disk->footer("Status: not built yet (issue #5).");
  disk->allow_extras();
  disk->callback([] {
    report_not_built("disk", "the disk image tool is in progress (issue #5)");
  });
}

}  // namespace lamina::cli
