#pragma once
// The virtio devices a VmConfig asks for, as MachineOptions::virtio_devices factories, and the
// host-side ends they use. Host ends (a console port's socket, later open disk images and
// network ports) are opened once per `lamina run` and outlive the Machines built from the
// config, so a --on-reboot restart gives the guest fresh devices on the same host ends.
//
// PCI slot order is the order add_virtio_devices() appends: rng, console port, then (as they
// are wired) disks and network cards.
//
// Ownership: VirtioHostEnds owns the host ends; the factories borrow them, so the ends must
// outlive every Machine built with those options. Thread-safety: build-time only.

#include <memory>
#include <vector>

#include "base/error.h"
#include "machine/machine_builder.h"
#include "machine/vm_config.h"
#include "virtio/host_console_port.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::machine {

struct VirtioHostEnds {
  std::unique_ptr<virtio::HostConsolePort> console_port;  // null for --console-port none
  std::vector<virtio::OpenedDisk> disks;  // one per --disk, images open for the whole run
};

// Opens what the config's devices need on the host (errors name the option).
Result<VirtioHostEnds> open_virtio_host_ends(const VmConfig& config);

// Appends one factory per virtio device of `config`.
void add_virtio_devices(const VmConfig& config, VirtioHostEnds& ends, MachineOptions& options);

}  // namespace lamina::machine
