#pragma once
// Loads a Multiboot (v1, spec 0.6.96) kernel the way QEMU's -kernel does: the header is
// searched in the first 8192 bytes, the image is loaded as ELF32 when header flag bit 16 is
// clear or by the header's a.out-kludge addresses when it is set, modules are placed after the
// kernel, and the Multiboot information structure (memory sizes, e820-based memory map,
// command line, modules, boot loader name) is written at kMultibootInfoAddress.
//
// Lamina's boot data (boot GDT, information area, boot stack) sits in [kBootGdtAddress,
// kBootStackTop) unless the kernel or a module lies there (kernels linked low, e.g. at 0x8000,
// which QEMU loads): then it moves, in the same layout, to the first pages after the last
// module, so the kernel's segments are never overwritten.
//
// Entry state (spec section 3.2): 32-bit protected mode, paging off, EAX = 0x2BADB002,
// EBX = physical address of the information structure, CS a flat 32-bit code segment
// (selector 0x08 of the boot GDT), data segments flat (0x18), interrupts off. The spec leaves
// ESP undefined; we point it at the top of the boot stack (kBootStackTop unless moved).
//
// Stateless; the caller owns the guest memory and the file bytes.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"
#include "machine/boot_state.h"
#include "machine/memory_layout.h"

namespace lamina::machine {

inline constexpr uint32_t kMultibootHeaderMagic = 0x1BADB002;
inline constexpr uint32_t kMultibootBootloaderMagic = 0x2BADB002;

// Information structure flags (spec section 3.3).
inline constexpr uint32_t kMultibootInfoMemory = 1 << 0;
inline constexpr uint32_t kMultibootInfoCommandLine = 1 << 2;
inline constexpr uint32_t kMultibootInfoModules = 1 << 3;
inline constexpr uint32_t kMultibootInfoMemoryMap = 1 << 6;
inline constexpr uint32_t kMultibootInfoBootLoaderName = 1 << 9;

struct MultibootHeader {
  uint64_t file_offset = 0;  // where the magic was found
  uint32_t flags = 0;
  // Valid when flags bit 16 (a.out kludge) is set.
  uint32_t header_addr = 0;
  uint32_t load_addr = 0;
  uint32_t load_end_addr = 0;
  uint32_t bss_end_addr = 0;
  uint32_t entry_addr = 0;
};

// Finds the first 4-byte-aligned header with a valid checksum in the first 8192 bytes
// (spec section 3.1.1). kNotFound when there is none: the file is not a Multiboot kernel.
Result<MultibootHeader> find_multiboot_header(std::span<const std::byte> file);

struct MultibootModule {
  std::span<const std::byte> data;
  std::string_view command_line;  // the module's string (often its name and arguments)
};

struct MultibootLoadOptions {
  std::span<const std::byte> kernel = {};
  // Passed verbatim. QEMU and GRUB put the kernel's file name first ("kernel.bin args"), and
  // many Multiboot kernels skip that first word: callers should do the same.
  std::string_view command_line = {};
  std::vector<MultibootModule> modules = {};
};

struct MultibootLoadResult {
  BootState state;
  uint64_t info_address = 0;
  uint64_t kernel_start = 0;  // physical range of the image including its bss
  uint64_t kernel_end = 0;
  std::vector<AddressRange> modules;  // where each module went, in order
  AddressRange boot_data{};           // boot GDT, information area and stack
};

// Errors: kNotFound (no header), kCorrupt (bad header addresses, bad ELF), kUnsupported
// (a required feature bit we do not provide, an ELF64 without the a.out kludge),
// kInvalidArgument (kernel, modules or the moved boot data do not fit in usable RAM below
// 4 GiB, or the strings overflow the information area).
Result<MultibootLoadResult> load_multiboot(GuestMemory& memory, const MemoryLayout& layout,
                                           const MultibootLoadOptions& options);

}  // namespace lamina::machine
