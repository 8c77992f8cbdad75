#pragma once
// MachineBuilder: the one place a PC is wired together. build() makes guest RAM from the memory
// layout, the port-I/O and MMIO buses and every platform device on them, routes the ISA IRQs to
// both 8259s and the IOAPIC, gives each vCPU its local APIC (LINT0 = 8259 INTR as ExtINT, LINT1
// = NMI) and CpuEnvironment, writes the ACPI tables for the vCPU count, loads the kernel (Linux
// bzImage/vmlinux or Multiboot v1, told apart by the file) and puts vCPU 0 in the state the
// loader asks for; the other vCPUs wait for INIT-SIPI-SIPI.
//
// Stateless; the Machine it returns owns everything built.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "base/error.h"
#include "cpu/x86/cpu_state.h"
#include "hw/uart16550.h"
#include "machine/boot_state.h"
#include "machine/linux_loader.h"
#include "machine/machine.h"

namespace lamina::machine {

struct MachineOptions {
  std::filesystem::path kernel;
  std::optional<std::filesystem::path> initrd;
  std::string cmdline;
  uint32_t cpus = 1;
  uint64_t memory_bytes = uint64_t{512} << 20;
  LinuxEntry linux_entry = LinuxEntry::kDecompressed;
  hw::SerialBackend* com1_backend = nullptr;  // borrowed; null drops COM1 output
  bool kvm = false;  // run the vCPUs on KVM (accel::create_kvm_accelerator) instead of the built-in CPU
};

class MachineBuilder {
 public:
  // Errors name what is wrong: kInvalidArgument (sizes), kNotFound/kIo (files), the loaders'
  // kCorrupt/kUnsupported for a kernel they cannot boot.
  static Result<std::unique_ptr<Machine>> build(const MachineOptions& options);
};

// Loads a BootState into a CPU's architectural state (both use the descriptor access-rights
// layout for hidden segment attributes). Exposed for tests.
void apply_boot_state(const BootState& boot, cpu::x86::CpuState& state);

}  // namespace lamina::machine
