#pragma once
// The fw_cfg "bootorder" a VM's --boot asks of SeaBIOS: one OpenFirmware-style device path per
// drive, in the order of effective_boot_order()'s kinds. SeaBIOS builds a glob for every drive
// it finds and gives the drive the priority of the first line the glob matches (src/boot.c,
// find_prio and glob_prefix): "/pci@i0cf8/*@SLOT" for a virtio disk, ".../drive@PORT/disk@0"
// under the AHCI controller's slot for a SATA drive. Drives no line names boot after the named
// ones, in SeaBIOS's own order.
//
// A stateless function; safe from any thread.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "machine/vm_config.h"

namespace lamina::machine {

// `virtio_disk_slots`: the PCI slot of each --disk on virtio, in order. Kind "disk" is every
// SATA disk (ports 0..), then every virtio disk; kind "cdrom" the CD-ROM (the port after the
// SATA disks). Empty when the config asks for no order.
std::vector<std::string> firmware_boot_order(const VmConfig& config,
                                             std::span<const uint8_t> virtio_disk_slots);

}  // namespace lamina::machine
