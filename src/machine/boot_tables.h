#pragma once
// The boot GDT and identity-mapping page tables that loaders write into guest RAM before
// entering a kernel (Linux 64-bit boot protocol, Multiboot 32-bit entry), and the register
// state that goes with them.

#include <cstdint>

#include "base/error.h"
#include "base/guest_memory.h"
#include "machine/boot_state.h"

namespace lamina::machine {

// Selectors in the boot GDT. Linux's 64-bit boot protocol (Documentation/arch/x86/boot.rst,
// "64-bit Boot Protocol") wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18, flat 4 GiB segments.
inline constexpr uint16_t kBootCode32Selector = 0x08;
inline constexpr uint16_t kBootCode64Selector = 0x10;
inline constexpr uint16_t kBootDataSelector = 0x18;
inline constexpr uint32_t kBootGdtBytes = 4 * 8;

// Identity map of the first 4 GiB with 2 MiB pages: PML4, one PDPT and four page directories.
inline constexpr uint64_t kIdentityMappedBytes = uint64_t{4} << 30;
inline constexpr uint64_t kBootPageTablesBytes = 6 * 4096;

// Writes the GDT (null, 32-bit code, 64-bit code, data; all flat, accessed bits set) at
// `address`.
[[nodiscard]] Result<void> write_boot_gdt(GuestMemory& memory, uint64_t address);

// Writes the page tables at `address` (4 KiB aligned, kBootPageTablesBytes long); the PML4 is
// the first page. Pages are present, writable, supervisor, executable.
[[nodiscard]] Result<void> write_identity_page_tables(GuestMemory& memory, uint64_t address);

// Register state for 64-bit entry with the GDT and page tables above: CS=0x10 (L=1), data
// segments 0x18, CR0=PE|ET|PG, CR4=PAE, EFER=LME|LMA, CR3=page tables.
BootState long_mode_boot_state(uint64_t gdt_address, uint64_t page_tables_address);

// Register state for 32-bit protected mode without paging: CS=0x08 (D=1), data 0x18, CR0=PE|ET.
BootState protected_mode_boot_state(uint64_t gdt_address);

}  // namespace lamina::machine
