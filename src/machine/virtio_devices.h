#pragma once
// The virtio devices a VmConfig asks for, as MachineOptions::virtio_devices factories, and the
// host-side ends they use. Host ends (a console port's socket, later open disk images and
// network ports) are opened once per `lamina run` and outlive the Machines built from the
// config, so a --on-reboot restart gives the guest fresh devices on the same host ends.
//
// PCI slot order is the order add_virtio_devices() appends: rng, console port, disks, network
// cards (--disk and --net order), then the tablet.
//
// Ownership: VirtioHostEnds owns the host ends; the factories borrow them, so the ends must
// outlive every Machine built with those options. Thread-safety: build-time only.

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "base/error.h"
#include "machine/machine_builder.h"
#include "machine/vm_config.h"
#include "net/frame_port.h"
#include "net/replaceable_port.h"
#include "virtio/host_console_port.h"
#include "virtio/virtio_block_setup.h"

namespace lamina::machine {

// The AHCI controller's drives (--disk ...,bus=sata and --cdrom), images open for the whole
// run like the virtio disks'.
struct SataHostEnds {
  std::vector<virtio::OpenedDisk> disks;
  std::optional<virtio::OpenedDisk> cdrom;
};

struct VirtioHostEnds {
  std::unique_ptr<virtio::HostConsolePort> console_port;  // null for --console-port none
  std::vector<virtio::OpenedDisk> disks;  // one per --disk, images open for the whole run
  // One per --net, in order: a switch port or a tap. Each boot's VirtioNet borrows its port
  // through an adapter, so the switch keeps the VM's port and MAC across restarts; the port's
  // backend can be replaced (a worker's card reconnected to a restarted switch).
  std::vector<std::unique_ptr<net::ReplaceablePort>> network_ports;
  SataHostEnds sata;
};

// Opens what the config's devices need on the host (errors name the option). `label` names
// the VM to the virtual switch (`lamina switch show` lists ports by it). With `granted`, every
// host file, socket and tap comes through it (a sandboxed worker: base/granted_files.h).
Result<VirtioHostEnds> open_virtio_host_ends(const VmConfig& config,
                                             std::string_view label = "lamina run",
                                             GrantedFiles* granted = nullptr);

// The two parts of open_virtio_host_ends that laminad also runs, recording, for a worker
// (machine/host_grants.h): every --disk image, and every --net port in order.
Result<std::vector<virtio::OpenedDisk>> open_disks(const VmConfig& config,
                                                   GrantedFiles* granted = nullptr);
Result<std::vector<std::unique_ptr<net::FramePort>>> open_network_ports(
    const VmConfig& config, const net::SwitchConnectOptions& switch_options,
    GrantedFiles* granted = nullptr);

// Opens the bus=sata disks and the CD-ROM (read-only) of `config`.
Result<SataHostEnds> open_sata_drives(const VmConfig& config, GrantedFiles* granted = nullptr);
// The SATA drives for MachineOptions::sata_drives: disks on ports 0.. in order, then the CD-ROM.
void add_sata_drives(const SataHostEnds& ends, MachineOptions& options);

// Told when a network card's backend fails (VirtioNet::set_backend_failure_listener), with the
// card's MAC; from the card's I/O thread, so it must not block.
using NetworkFailureListener = std::function<void(const net::MacAddress&, const Error&)>;

// Appends one factory per virtio device of `config`.
void add_virtio_devices(const VmConfig& config, VirtioHostEnds& ends, MachineOptions& options,
                        const NetworkFailureListener& on_network_failure = {});

// The factory of one disk's device (it shares the opened image) and of one network card's
// (it borrows the port, which must outlive it); for add_virtio_devices and hotplug.
VirtioDeviceFactory disk_device_factory(const virtio::OpenedDisk& disk);
VirtioDeviceFactory network_device_factory(net::FramePort& port, const net::MacAddress& mac,
                                           NetworkFailureListener on_failure = {});

}  // namespace lamina::machine
