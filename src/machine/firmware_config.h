#pragma once
// What firmware learns of the machine through fw_cfg (hw/fw_cfg.h), in the items and files
// SeaBIOS reads (src/fw/paravirt.c, src/fw/romfile_loader.c, src/fw/smbios.c) and OVMF reads
// the same way: CPU counts, RAM size, the e820 RAM map ("etc/e820"), the reserved end of
// hotplug memory, the boot order, how long to wait before retrying a failed boot, the serial
// port the BIOS mirrors its screen to ("etc/sercon-port"), Lamina's ACPI tables through the
// table loader and the SMBIOS tables.
//
// A stateless function filling a FwCfg before the guest runs.

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "hw/fw_cfg.h"
#include "machine/acpi/config.h"
#include "machine/memory_layout.h"

namespace lamina::machine {

struct FirmwareConfigOptions {
  uint32_t cpus = 1;      // present at boot
  uint32_t max_cpus = 1;  // including hotpluggable ones
  // OpenFirmware-style device paths, first boots first ("bootorder"; empty: the firmware's
  // default order).
  std::vector<std::string> boot_order;
  // Milliseconds SeaBIOS waits after no device booted before it resets the machine.
  uint32_t boot_fail_wait_ms = 5000;
  uint16_t serial_console_port = 0x3f8;  // 0: no screen mirroring to a serial port
};

// The e820 entries "etc/e820" carries: RAM (from 0: the firmware reserves its own areas below
// 1 MiB) and the platform's reserved windows above the PCI hole's start.
std::vector<E820Entry> firmware_e820(const MemoryLayout& layout);

[[nodiscard]] Result<void> populate_firmware_config(hw::FwCfg& fw_cfg, const MemoryLayout& layout,
                                                    const acpi::AcpiConfig& acpi_config,
                                                    const FirmwareConfigOptions& options);

}  // namespace lamina::machine
