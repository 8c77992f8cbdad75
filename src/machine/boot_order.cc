#include "machine/boot_order.h"

#include <fmt/format.h>

#include "machine/machine_builder.h"

namespace lamina::machine {

std::vector<std::string> firmware_boot_order(const VmConfig& config,
                                             std::span<const uint8_t> virtio_disk_slots) {
  std::vector<std::string> lines;
  for (BootDevice kind : effective_boot_order(config)) {
    if (kind == BootDevice::kCdrom) {
      if (config.cdrom) lines.push_back(sata_boot_path(static_cast<unsigned>(config.sata_disks.size())));
      continue;
    }
    for (unsigned port = 0; port < config.sata_disks.size(); ++port) {
      lines.push_back(sata_boot_path(port));
    }
    for (uint8_t slot : virtio_disk_slots) lines.push_back(fmt::format("/pci@i0cf8/disk@{:x}", slot));
  }
  return lines;
}

}  // namespace lamina::machine
