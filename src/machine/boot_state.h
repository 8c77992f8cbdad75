#pragma once
// BootState: the vCPU state a boot loader (Linux, Multiboot) asks the CPU core to establish on
// the bootstrap processor before the first instruction. The loaders also write the structures
// this state points at (GDT, page tables, boot_params or Multiboot info) into guest RAM, so the
// core only loads registers: it must not walk the GDT to compute hidden segment state, the
// descriptors below are the values to load.
//
// A plain value; no ownership, no synchronization.

#include <cstdint>
#include <string>

namespace lamina::machine {

enum class CpuMode {
  kProtected32,  // CR0.PE=1, paging off (Multiboot v1)
  kLong64,       // CR0.PE=1, CR0.PG=1, CR4.PAE=1, EFER.LME=LMA=1, 64-bit CS (Linux)
};

// A segment register with its hidden part. `attributes` uses the VMX access-rights layout
// (Intel SDM vol. 3, table 24-2): type bits 0-3, S bit 4, DPL bits 5-6, P bit 7, AVL bit 12,
// L bit 13, D/B bit 14, G bit 15.
struct SegmentState {
  uint16_t selector = 0;
  uint64_t base = 0;
  uint32_t limit = 0;  // in bytes, already scaled by G
  uint16_t attributes = 0;
};

struct DescriptorTableState {
  uint64_t base = 0;
  uint16_t limit = 0;
};

struct BootState {
  CpuMode mode = CpuMode::kLong64;
  uint64_t rip = 0;
  uint64_t rsp = 0;  // the protocols leave the stack undefined; we give a usable one anyway
  uint64_t rax = 0;
  uint64_t rbx = 0;
  uint64_t rsi = 0;
  uint64_t rflags = 0x2;  // bit 1 is reserved-one; IF=0: interrupts disabled at entry
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
  SegmentState cs, ds, es, ss, fs, gs;
  DescriptorTableState gdt;
  DescriptorTableState idt;  // limit 0: no IDT; the kernel installs its own before STI
  // What the page tables at cr3 map: virtual = physical for [0, identity_mapped_bytes).
  uint64_t identity_mapped_bytes = 0;
};

// One line for logs: mode, RIP, RSP, RAX, RBX, RSI, control registers, CS and the GDT.
std::string describe(const BootState& state);

}  // namespace lamina::machine
