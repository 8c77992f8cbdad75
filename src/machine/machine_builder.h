#pragma once
// MachineBuilder: the one place a PC is wired together. build() makes guest RAM from the memory
// layout, the port-I/O and MMIO buses and every platform device on them, routes the ISA IRQs to
// both 8259s and the IOAPIC, gives each vCPU its local APIC (LINT0 = 8259 INTR as ExtINT, LINT1
// = NMI) and CpuEnvironment, writes the ACPI tables for the vCPU count, loads the kernel (Linux
// bzImage/vmlinux or Multiboot v1, told apart by the file) and puts vCPU 0 in the state the
// loader asks for; the other vCPUs wait for INIT-SIPI-SIPI.
//
// Virtio devices are plugged into PCI bus 0 as virtio-pci functions, one per slot from 00:01.0
// in the order of MachineOptions::virtio_devices (an empty factory leaves its slot empty),
// with BARs assigned as firmware would, INTx routed per the DSDT's _PRT and MSI-X to the APIC
// bus. Slots 1-31 take ACPI PCI hotplug (Machine::hot_add_virtio/hot_remove_virtio).
//
// Stateless; the Machine it returns owns everything built.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/error.h"
#include "cpu/x86/cpu_state.h"
#include "hw/uart16550.h"
#include "machine/acpi/config.h"
#include "machine/boot_state.h"
#include "machine/firmware_kind.h"
#include "machine/linux_loader.h"
#include "machine/machine.h"
#include "machine/pci_resources.h"
#include "storage/block_device.h"
#include "virtio/virtio_device.h"

namespace lamina::machine {

using VirtioDeviceFactory = std::function<Result<std::unique_ptr<virtio::VirtioDevice>>()>;

// One drive on the AHCI SATA controller: a disk, or a CD-ROM whose image holds 2048-byte
// blocks. The image is shared with the run (a --on-reboot restart keeps it open).
struct SataDriveOption {
  std::shared_ptr<storage::BlockDevice> image;
  std::string serial;
  bool cdrom = false;
};

// The PCI slot of the AHCI controller when a machine has SATA drives (00:1e.0; slot 31 is
// virtio-mem's), and its firmware device paths: SeaBIOS matches "/pci@i0cf8/*@SLOT/drive@PORT/
// disk@0" against bootorder lines (src/boot.c, build_ata_path).
inline constexpr uint8_t kAhciSlot = 30;
std::string sata_boot_path(unsigned port);

// Kernel and initrd files larger than this are refused before reading them into memory.
inline constexpr uint64_t kMaxBootFileSize = uint64_t{1} << 30;

// Firmware images larger than this are refused (the flash window below 4 GiB is 256 KiB).
inline constexpr uint64_t kMaxFirmwareSize = uint64_t{256} << 10;

// kInvalidArgument unless `image` can be a BIOS flash image (a power of two from 64 KiB to
// kMaxFirmwareSize, decoded up to 4 GiB); `path` names it in the message.
Result<void> check_firmware_image(std::span<const std::byte> image,
                                  const std::filesystem::path& path);

struct MachineOptions {
  // How vCPU 0 starts: at a kernel the machine loads itself (Linux or Multiboot), or at the
  // reset vector of firmware (SeaBIOS) that boots the OS from a disk as a PC does.
  FirmwareKind firmware = FirmwareKind::kNone;
  // The BIOS image (kBios): read from firmware_path unless firmware_image holds it already.
  std::filesystem::path firmware_path;
  std::shared_ptr<const std::vector<std::byte>> firmware_image;
  // fw_cfg "bootorder" device paths for the firmware, first boots first (empty: its default).
  std::vector<std::string> boot_order;
  // The standard VGA adapter (hw/display/std_vga_pci.h) in PCI slot kDisplaySlot, with this
  // option ROM (SeaBIOS's vgabios-stdvga.bin) for the firmware in fw_cfg; null: no VGA.
  std::shared_ptr<const std::vector<std::byte>> vga_rom_image;
  bool vga = false;
  std::filesystem::path kernel;
  std::optional<std::filesystem::path> initrd;
  // The kernel and initrd read ahead (by a worker before its sandbox closes the file system);
  // when set they are used instead of reading the paths, which then only name them.
  std::shared_ptr<const std::vector<std::byte>> kernel_image;
  std::shared_ptr<const std::vector<std::byte>> initrd_image;
  std::string cmdline;
  uint32_t cpus = 1;
  // vCPUs the machine is built with (0: cpus); those past `cpus` are absent until ACPI CPU
  // hotplug brings them (Machine::hot_add_vcpu).
  uint32_t max_cpus = 0;
  uint64_t memory_bytes = uint64_t{512} << 20;
  // Guest RAM the machine may grow to while it runs (0: memory_bytes): the difference, rounded
  // up to 128 MiB, is a virtio-mem device's region in PCI slot 31 (Machine::set_memory_size).
  uint64_t max_memory_bytes = 0;
  LinuxEntry linux_entry = LinuxEntry::kDecompressed;
  // Where a bzImage's decompressed kernel is kept for the next boot (KernelCache); none: always
  // decompress.
  std::optional<std::filesystem::path> kernel_cache;
  hw::SerialBackend* com1_backend = nullptr;  // borrowed; null drops COM1 output
  bool kvm =
      false;  // run the vCPUs on KVM (accel::create_kvm_accelerator) instead of the built-in CPU
  // The CPU model the guest sees (accel::CpuModelKind); kHost needs kvm.
  accel::CpuModelKind cpu_model = accel::CpuModelKind::kLamina;
  // With kLamina: present the model without what this backend lacks, on the built-in CPU too
  // (`--cpu-model lamina-kvm`: this host's KVM's support, accel::kvm_cpuid_support), so the VM
  // can move to that KVM.
  std::optional<cpu::x86::CpuidSupport> cpu_support_limit;
  // With kvm: the KVM device opened before a sandbox (borrowed; accel::open_kvm_device), or
  // -1 to open it while building.
  int kvm_device = -1;
  // The built-in CPU translates guest code to host code (false: it interprets); the
  // translated code of all vCPUs together stays within code_cache_bytes.
  bool jit = true;
  uint64_t code_cache_bytes = uint64_t{64} << 20;  // vm_config.h's kDefaultCodeCacheBytes
  // Map the debug-exit port (0xf4, QEMU's isa-debug-exit) so the guest can end the run with a
  // status of its choice. Off by default: only test guests may pick lamina's exit status.
  bool debug_exit = false;
  // One entry per virtio device, called on every build (each boot of a --on-reboot restart
  // gets fresh devices, which is the devices' machine reset). A factory may borrow host-side
  // things that outlive the machines (a console backend, an open disk image); its error stops
  // the build.
  // Factory i makes the device of PCI slot i + 1; an empty one leaves that slot empty.
  std::vector<VirtioDeviceFactory> virtio_devices;
  // Drives of the AHCI controller, on ports 0, 1, ... in order (at most 6); none: no
  // controller. Its slot (kAhciSlot) then takes no virtio device or hotplug.
  std::vector<SataDriveOption> sata_drives;
  // Runs first on every vCPU thread, before its first guest instruction (a sandboxed worker
  // tightens that thread's seccomp filter here). Threads a vCPU thread starts — the device I/O
  // threads a guest's DRIVER_OK starts — inherit what it did. Empty: nothing.
  std::function<void()> guest_thread_setup;
  // A machine whose RAM and vCPU state a saved machine state will replace
  // (migration/machine_state.h): no ACPI tables and no kernel are loaded, so the kernel and
  // initrd may be absent.
  bool for_restore = false;
};

// The memory layout of a machine with `memory_bytes` of RAM and, when `max_memory_bytes` is
// larger, virtio-mem's hotplug region (rounded up to its 128 MiB blocks): what build() maps,
// and what a live migration's receiver lays its state file out by.
Result<MemoryLayout> machine_memory_layout(uint64_t memory_bytes, uint64_t max_memory_bytes);

class MachineBuilder {
 public:
  // Errors name what is wrong: kInvalidArgument (sizes), kNotFound/kIo (files), the loaders'
  // kCorrupt/kUnsupported for a kernel they cannot boot.
  static Result<std::unique_ptr<Machine>> build(const MachineOptions& options);

  // The CPU model a machine built from `options` would present (its accelerator's, made on a
  // page of RAM: a KVM one opens a VM), so a restore can be refused before anything starts.
  static Result<accel::PresentedCpu> presented_cpu(const MachineOptions& options);

 private:
  // The machine's CPU model and the accelerator that runs it on `memory`.
  // `quiet`: without the log of the model's features KVM lacks (the machine built next logs it).
  static Result<std::unique_ptr<accel::Accelerator>> make_accelerator(
      GuestMemory& memory, const MachineOptions& options, bool quiet = false);
  static Result<void> add_firmware(Machine& machine, const MachineOptions& options);
  static Result<void> add_display(Machine& machine);
  static Result<BootState> load_boot_images(Machine& machine, const MachineOptions& options,
                                            const acpi::AcpiConfig& acpi_config);
  static Result<void> add_virtio_functions(Machine& machine, const MachineOptions& options,
                                           uint32_t pci_gsi_base);
  static Result<void> add_ahci(Machine& machine, const MachineOptions& options,
                               PciResourceAllocator* resources);
};

// Loads a BootState into a CPU's architectural state (both use the descriptor access-rights
// layout for hidden segment attributes). Exposed for tests.
void apply_boot_state(const BootState& boot, cpu::x86::CpuState& state);

}  // namespace lamina::machine
