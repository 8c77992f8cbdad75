#include "machine/virtio_devices.h"

#include <fmt/format.h>

#include "virtio/virtio_block.h"
#include "virtio/virtio_console.h"
#include "virtio/virtio_net.h"
#include "virtio/virtio_rng.h"
#include "virtio/virtio_tablet.h"

namespace lamina::machine {

namespace {

// The FramePort a boot's VirtioNet owns: forwards to the run's port in VirtioHostEnds, so
// destroying the device at a reboot does not unplug the VM from its switch or tap. Only one
// VirtioNet uses a port at a time (the previous Machine is gone before the next is built), so
// the port's one-sender/one-receiver rule holds. Thread-safety: as FramePort.
class BorrowedFramePort final : public net::FramePort {
 public:
  explicit BorrowedFramePort(net::FramePort& port) : port_(port) {}
  const std::string& description() const override { return port_.description(); }
  int poll_fd() const override { return port_.poll_fd(); }
  [[nodiscard]] Result<net::SendStatus> send(std::span<const std::byte> frame) override {
    auto sent = port_.send(frame);
    if (sent && *sent == net::SendStatus::kSent) count_sent(frame.size());
    return sent;
  }
  [[nodiscard]] Result<std::optional<size_t>> receive(std::span<std::byte> buffer) override {
    auto received = port_.receive(buffer);
    if (received && *received) count_received(**received);
    return received;
  }

 private:
  net::FramePort& port_;
};

}  // namespace

Result<VirtioHostEnds> open_virtio_host_ends(const VmConfig& config, std::string_view label,
                                             GrantedFiles* granted) {
  VirtioHostEnds ends;
  const ConsolePortConfig& port = config.console_port;
  Result<std::unique_ptr<virtio::HostConsolePort>> opened = nullptr;
  switch (port.kind) {
    case ConsolePortKind::kNone: break;
    case ConsolePortKind::kStdio: opened = virtio::HostConsolePort::open_stdio(); break;
    case ConsolePortKind::kFile:
      opened = virtio::HostConsolePort::open_file(port.path, granted);
      break;
    case ConsolePortKind::kSocket:
      opened = virtio::HostConsolePort::open_socket(port.path, granted);
      break;
  }
  if (!opened) return fail(opened.error());
  ends.console_port = std::move(*opened);
  auto disks = open_disks(config, granted);
  if (!disks) return fail(disks.error());
  ends.disks = std::move(*disks);
  auto sata = open_sata_drives(config, granted);
  if (!sata) return fail(sata.error());
  ends.sata = std::move(*sata);
  // A missing switch daemon is started from this binary (`lamina switch serve NAME`).
  net::SwitchConnectOptions switch_options;
  switch_options.label = std::string(label);
  auto ports = open_network_ports(config, switch_options, granted);
  if (!ports) return fail(ports.error());
  for (auto& opened_port : *ports) {
    ends.network_ports.push_back(std::make_unique<net::ReplaceablePort>(std::move(opened_port)));
  }
  return ends;
}

Result<std::vector<virtio::OpenedDisk>> open_disks(const VmConfig& config,
                                                   GrantedFiles* granted) {
  std::vector<virtio::OpenedDisk> disks;
  for (virtio::DiskSpec disk : config.disks) {
    disk.references.granted = granted;
    auto image = virtio::open_disk(disk);
    if (!image) return fail(image.error());
    disks.push_back(std::move(*image));
  }
  return disks;
}

Result<SataHostEnds> open_sata_drives(const VmConfig& config, GrantedFiles* granted) {
  SataHostEnds ends;
  for (virtio::DiskSpec disk : config.sata_disks) {
    disk.references.granted = granted;
    auto image = virtio::open_disk(disk);
    if (!image) return fail(image.error());
    ends.disks.push_back(std::move(*image));
  }
  if (config.cdrom) {
    virtio::DiskSpec disc;
    disc.path = config.cdrom->string();
    disc.read_only = true;
    disc.references.granted = granted;
    auto image = virtio::open_disk(disc);
    if (!image) return fail(image.error().with_context("--cdrom"));
    ends.cdrom = std::move(*image);
  }
  return ends;
}

void add_sata_drives(const SataHostEnds& ends, MachineOptions& options) {
  for (const virtio::OpenedDisk& disk : ends.disks) {
    options.sata_drives.push_back({disk.image, disk.serial, false});
  }
  if (ends.cdrom) options.sata_drives.push_back({ends.cdrom->image, ends.cdrom->serial, true});
}

Result<std::vector<std::unique_ptr<net::FramePort>>> open_network_ports(
    const VmConfig& config, const net::SwitchConnectOptions& switch_options,
    GrantedFiles* granted) {
  std::vector<std::unique_ptr<net::FramePort>> ports;
  for (const net::NetworkOption& network : config.networks) {
    auto port = net::open_frame_port(network, switch_options, granted);
    if (!port) {
      return fail(port.error().with_context(fmt::format("--net {}", net::describe(network))));
    }
    ports.push_back(std::move(*port));
  }
  return ports;
}

void add_virtio_devices(const VmConfig& config, VirtioHostEnds& ends, MachineOptions& options,
                        const NetworkFailureListener& on_network_failure) {
  using DeviceResult = Result<std::unique_ptr<virtio::VirtioDevice>>;
  if (config.rng) {
    options.virtio_devices.push_back(
        [] { return DeviceResult(std::make_unique<virtio::VirtioRng>()); });
  }
  if (ends.console_port) {
    options.virtio_devices.push_back([port = ends.console_port.get()] {
      return DeviceResult(std::make_unique<virtio::VirtioConsole>(*port));
    });
  }
  // Disks in --disk order, so the first is /dev/vda in a Linux guest.
  for (const virtio::OpenedDisk& disk : ends.disks) {
    options.virtio_devices.push_back(disk_device_factory(disk));
  }
  for (size_t i = 0; i < config.networks.size() && i < ends.network_ports.size(); ++i) {
    options.virtio_devices.push_back(
        network_device_factory(*ends.network_ports[i], config.networks[i].mac, on_network_failure));
  }
  // The tablet last, so the slots of the devices above stay as they were without it.
  if (effective_tablet(config.tablet, config.display)) {
    options.virtio_devices.push_back(
        [] { return DeviceResult(std::make_unique<virtio::VirtioTablet>()); });
  }
}

VirtioDeviceFactory disk_device_factory(const virtio::OpenedDisk& disk) {
  using DeviceResult = Result<std::unique_ptr<virtio::VirtioDevice>>;
  return [disk]() -> DeviceResult {
    auto device = virtio::make_virtio_block(disk);
    if (!device) return fail(device.error());
    return DeviceResult(std::move(*device));
  };
}

VirtioDeviceFactory network_device_factory(net::FramePort& port, const net::MacAddress& mac,
                                           NetworkFailureListener on_failure) {
  using DeviceResult = Result<std::unique_ptr<virtio::VirtioDevice>>;
  return [port = &port, mac, on_failure = std::move(on_failure)]() -> DeviceResult {
    auto device = virtio::VirtioNet::create(std::make_unique<BorrowedFramePort>(*port), mac);
    if (!device) return fail(device.error());
    if (on_failure) {
      (*device)->set_backend_failure_listener([on_failure, mac](const Error& error) { on_failure(mac, error); });
    }
    return std::move(*device);
  };
}

}  // namespace lamina::machine
