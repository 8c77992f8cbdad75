#pragma once
// Test guests in 64-bit mode without a bootloader: identity-mapped page tables (2 MiB pages),
// a flat GDT (null, 64-bit code at 0x08, data at 0x10) and the CPU state that uses them, as the
// accelerator and live-migration tests set a vCPU up.

#include <array>
#include <cstdint>
#include <span>

#include "base/byte_order.h"
#include "base/guest_memory.h"
#include "cpu/x86/cpu_state.h"
#include "cpu/x86/system/control_bits.h"

namespace lamina::test_support {

// Writes a PML4, PDPT and PD at `tables`, `tables` + 0x1000 and + 0x2000 mapping the first
// `mapped_2m_pages` x 2 MiB (at most 512) to themselves, and the GDT at `tables` + 0x3000.
// False when a table is outside RAM.
inline bool write_flat_long_mode_tables(GuestMemory& memory, uint64_t tables, unsigned mapped_2m_pages) {
  auto put64 = [&memory](uint64_t address, uint64_t value) {
    std::array<std::byte, 8> bytes{};
    store_le<uint64_t>(bytes.data(), value);
    return memory.write(address, bytes).has_value();
  };
  bool ok = put64(tables, (tables + 0x1000) | 3) && put64(tables + 0x1000, (tables + 0x2000) | 3);
  for (uint64_t i = 0; i < mapped_2m_pages && i < 512; ++i) ok = ok && put64(tables + 0x2000 + 8 * i, (i << 21) | 0x83);
  return ok && put64(tables + 0x3000, 0) && put64(tables + 0x3008, 0x00af9b000000ffff) &&
         put64(tables + 0x3010, 0x00cf93000000ffff);
}

// `state` in 64-bit mode at CPL 0 on the tables above: CR0.PG/PE, PAE, EFER.LME/LMA, CS the
// 64-bit code segment, DS/ES/SS/FS/GS flat data, RIP `rip`.
inline void enter_flat_long_mode(cpu::x86::CpuState& state, uint64_t tables, uint64_t rip) {
  namespace x86 = cpu::x86;
  state.cr0 = x86::cr0::kPe | x86::cr0::kEt | x86::cr0::kPg;
  state.cr3 = tables;
  state.cr4 = 0x20;        // PAE
  state.msr.efer = 0x500;  // LME | LMA
  state.segment[x86::kCs] = x86::SegmentCache{0x08, 0, 0xffffffff, 0xa09b};
  for (auto segment : {x86::kDs, x86::kEs, x86::kSs, x86::kFs, x86::kGs}) {
    state.segment[segment] = x86::SegmentCache{0x10, 0, 0xffffffff, 0xc093};
  }
  state.gdtr = {tables + 0x3000, 23};
  state.cpl = 0;
  state.rip = rip;
}

}  // namespace lamina::test_support
