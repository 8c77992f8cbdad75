#pragma once
// Loads a 64-bit Linux kernel into guest RAM following the x86 boot protocol
// (Documentation/arch/x86/boot.rst, "64-bit Boot Protocol") and returns the vCPU state to
// enter it with.
//
// Two ways in:
//  * kDecompressed (default): the bzImage's compressed vmlinux is decompressed on the host,
//    its PT_LOAD segments are put at their physical addresses and the CPU enters the ELF's
//    entry point (startup_64 of the kernel proper, arch/x86/kernel/head_64.S, which accepts
//    "a 64bit bootloader" directly). An ELF vmlinux file is loaded the same way.
//    No relocation is applied, and none is needed: on x86-64 the decompressor only processes
//    vmlinux.relocs when KASLR moved the kernel's *virtual* base away from LOAD_PHYSICAL_ADDR
//    (arch/x86/boot/compressed/misc.c, handle_relocations); the physical load address is
//    handled at run time by startup_64 (phys_base). We leave the virtual base alone and clear
//    loadflags.KASLR_FLAG, so the kernel knows it was not randomized (it then also skips
//    randomizing its memory regions). The kernel command line is not touched.
//  * kBzImage64: the protected-mode part of the bzImage goes at pref_address and the CPU
//    enters its 64-bit entry at load address + 0x200; the kernel's own decompressor runs in
//    the guest (and may apply KASLR itself).
//
// Either way the loader writes: the kernel, the initrd (high, below initrd_addr_max, outside
// the kernel's init_size), the command line at kCommandLineAddress, boot_params at
// kBootParamsAddress, the boot GDT at kBootGdtAddress and identity page tables for the first
// 4 GiB at kBootPageTablesAddress (see memory_layout.h and boot_tables.h).
//
// Stateless; the caller owns the guest memory and the file bytes.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "base/error.h"
#include "base/guest_memory.h"
#include "machine/boot_state.h"
#include "machine/kernel_cache.h"
#include "machine/kernel_decompressor.h"
#include "machine/memory_layout.h"

namespace lamina::machine {

enum class LinuxEntry {
  kDecompressed,  // decompress on the host, enter the vmlinux ELF entry point
  kBzImage64,     // enter the bzImage's own 64-bit entry (code32_start + 0x200 equivalent)
};

struct LinuxLoadOptions {
  std::span<const std::byte> kernel = {};  // a bzImage or an ELF64 vmlinux
  std::span<const std::byte> initrd = {};  // may be empty
  std::string_view command_line = {};
  LinuxEntry entry = LinuxEntry::kDecompressed;
  uint64_t acpi_rsdp_address = 0;  // written to boot_params.acpi_rsdp_addr (0: kernel scans)
  uint64_t max_decompressed_size = 512 * kMiB;  // bomb limit for the native decompression
  const KernelCache* kernel_cache = nullptr;     // where decompressed kernels are kept (borrowed)
};

struct LinuxLoadResult {
  // RIP = kernel entry, RSI = boot_params, long mode with the boot GDT and identity map.
  BootState state;
  uint64_t kernel_start = 0;  // physical range reserved for the kernel (incl. init_size)
  uint64_t kernel_end = 0;
  uint64_t initrd_address = 0;
  uint64_t initrd_size = 0;
  uint64_t boot_params_address = 0;
  uint64_t command_line_address = 0;
  uint16_t boot_protocol = 0;               // 0 for an ELF vmlinux
  std::optional<Compression> compression;   // for kDecompressed from a bzImage
};

// Errors: kCorrupt / kUnsupported for a bad or unsuitable kernel or initrd (naming the field),
// kInvalidArgument when something does not fit in the guest's RAM or the command line is too
// long for the kernel.
Result<LinuxLoadResult> load_linux(GuestMemory& memory, const MemoryLayout& layout,
                                   const LinuxLoadOptions& options);

}  // namespace lamina::machine
