#pragma once
// From a user's disk description to a VirtioBlock: parses `--disk PATH[,readonly][,serial=S]`,
// checks it before anything starts (the file exists, its format is detected, a format Lamina
// only reads is attached read-only, the serial is valid), and opens the image.
//
// Thread-safety: free functions on values; opening takes the image's lock (one writer).

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "base/error.h"
#include "storage/image_reference_policy.h"
#include "storage/tracked_block_device.h"
#include "virtio/virtio_block.h"

namespace lamina::virtio {

// Which controller a disk sits on: virtio-blk (its own PCI function) or a port of the AHCI
// SATA controller (src/ahci), for guests without virtio drivers.
enum class DiskBus { kVirtio, kSata };

struct DiskSpec {
  std::string path;
  bool read_only = false;
  std::string serial;  // empty: derived from the path (derive_block_serial)
  // Where the image's parents and backing files may lie besides its own folder
  // (`allow-parent-dir`, `allow-dir=DIR`).
  storage::ReferencePolicy references = {};
  DiskBus bus = DiskBus::kVirtio;
};

// "PATH[,readonly][,serial=S][,bus=virtio|sata][,allow-parent-dir][,allow-dir=DIR]..." (options
// in any order);
// a comma inside the path (or a value) is written ",,", as in QEMU.
[[nodiscard]] Result<DiskSpec> parse_disk_spec(std::string_view text);

// Checks one disk and, across the list, that no image is attached twice while writable.
// Errors name the --disk value and what to change.
[[nodiscard]] Result<void> validate_disks(std::span<const DiskSpec> disks);

// An image opened for a VM's lifetime (it outlives the Machines of a --on-reboot restart),
// with the serial its devices answer.
struct OpenedDisk {
  // Tracked (storage/tracked_block_device.h): a live migration can copy it while it runs.
  std::shared_ptr<storage::TrackedBlockDevice> image;
  std::string serial;
};

// Opens the image (read-write unless read_only; a writer holds the image's lock) and settles
// the serial (the given one, or derive_block_serial()).
[[nodiscard]] Result<OpenedDisk> open_disk(const DiskSpec& disk);
// A fresh device on an opened disk (one per Machine).
[[nodiscard]] Result<std::unique_ptr<VirtioBlock>> make_virtio_block(const OpenedDisk& disk);

}  // namespace lamina::virtio
