#include "machine/virtio_devices.h"

#include "virtio/virtio_block.h"
#include "virtio/virtio_console.h"
#include "virtio/virtio_rng.h"

namespace lamina::machine {

Result<VirtioHostEnds> open_virtio_host_ends(const VmConfig& config) {
  VirtioHostEnds ends;
  const ConsolePortConfig& port = config.console_port;
  Result<std::unique_ptr<virtio::HostConsolePort>> opened = nullptr;
  switch (port.kind) {
    case ConsolePortKind::kNone: break;
    case ConsolePortKind::kStdio: opened = virtio::HostConsolePort::open_stdio(); break;
    case ConsolePortKind::kFile: opened = virtio::HostConsolePort::open_file(port.path); break;
    case ConsolePortKind::kSocket: opened = virtio::HostConsolePort::open_socket(port.path); break;
  }
  if (!opened) return fail(opened.error());
  ends.console_port = std::move(*opened);
  for (const virtio::DiskSpec& disk : config.disks) {
    auto image = virtio::open_disk(disk);
    if (!image) return fail(image.error());
    ends.disks.push_back(std::move(*image));
  }
  return ends;
}

void add_virtio_devices(const VmConfig& config, VirtioHostEnds& ends, MachineOptions& options) {
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
    options.virtio_devices.push_back([&disk]() -> DeviceResult {
      auto device = virtio::make_virtio_block(disk);
      if (!device) return fail(device.error());
      return DeviceResult(std::move(*device));
    });
  }
}

}  // namespace lamina::machine
