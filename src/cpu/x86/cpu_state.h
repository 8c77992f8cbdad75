#pragma once
// CpuState: the architectural state of one x86-64 logical processor that the core owns
// (general registers, RIP, RFLAGS, segments with their hidden descriptor caches, descriptor
// table registers, control/debug registers with the #DB traps a MOV SS holds, and every MSR
// in `msr`: the one store that RDMSR/WRMSR (system/msr_file), SYSCALL, SWAPGS, RDTSC and the
// page walks read), and what only a hardware-run vCPU (KVM) leaves for a move to the built-in
// CPU: events it held (PendingEvents) and XSAVE state past SSE (ExtendedSimdState). One format
// for both accelerators: a state read from either restores on the other.
//
// Ownership: plain data, owned by its Cpu. Thread-safety: used only by its vCPU's thread (or
// by others while that vCPU is stopped, e.g. for migration).

#include <array>
#include <cstdint>

#include "cpu/x86/lazy_flags.h"
#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/system/control_bits.h"
#include "cpu/x86/system/debug_registers.h"
#include "cpu/x86/system/msr_file.h"
#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {

enum Gpr : uint8_t {
  kRax, kRcx, kRdx, kRbx, kRsp, kRbp, kRsi, kRdi,
  kR8, kR9, kR10, kR11, kR12, kR13, kR14, kR15,
};

// Segment register order is the ModRM.reg / opcode encoding (Intel SDM vol. 2, table 3-6).
enum Segment : uint8_t { kEs, kCs, kSs, kDs, kFs, kGs, kNoSegment = 7 };

// Hidden part of a segment register (SDM vol. 3, 3.4.3). `attributes` packs descriptor bits
// 40-47 and 52-55 as bits 0-7 and 12-15 (type, S, DPL, P, AVL, L, D/B, G).
struct SegmentCache {
  uint16_t selector = 0;
  uint64_t base = 0;
  uint32_t limit = 0xffff;   // byte granular, already scaled by G
  uint16_t attributes = 0x93;  // present, writable data, accessed
  uint8_t dpl() const { return (attributes >> 5) & 3; }
  bool present() const { return attributes & 0x80; }
  bool long_mode() const { return attributes & 0x2000; }
  bool default_big() const { return attributes & 0x4000; }
  uint8_t type() const { return attributes & 0xf; }
  bool code_or_data() const { return attributes & 0x10; }
};

// An event whose delivery had begun, or that was queued for delivery, when a hardware-run vCPU
// (KVM) stopped: KVM reports these through KVM_GET_VCPU_EVENTS (an interrupt acknowledged at
// the LAPIC and handed to KVM_INTERRUPT, an exception its emulator raised, an NMI taken from
// the LAPIC). The built-in CPU delivers events at once and never leaves one here itself; it
// delivers a restored one before its next instruction (Cpu::run).
struct PendingEvents {
  bool exception = false;  // `exception_vector` with its error code, before anything else
  uint8_t exception_vector = 0;
  bool exception_has_error_code = false;
  uint32_t exception_error_code = 0;
  bool interrupt = false;  // external interrupt `interrupt_vector` (already acknowledged)
  uint8_t interrupt_vector = 0;
  bool nmi = false;        // an NMI taken from the platform, delivered when NMIs are unblocked
  bool any() const { return exception || interrupt || nmi; }
  friend bool operator==(const PendingEvents&, const PendingEvents&) = default;
};

// XSAVE state past x87/SSE (SDM Vol. 1 13.1): XCR0 and AVX's upper YMM halves (component 2).
// The built-in CPU offers no XSAVE, so it only carries these; a vCPU on KVM uses them.
struct ExtendedSimdState {
  uint64_t xcr0 = 1;  // x87 only: the value after RESET (SDM Vol. 1 13.3)
  std::array<std::array<uint8_t, 16>, 16> ymm_high{};
  friend bool operator==(const ExtendedSimdState&, const ExtendedSimdState&) = default;
};

struct DescriptorTableRegister {
  uint64_t base = 0;
  uint16_t limit = 0xffff;
};

namespace rflags {
inline constexpr uint64_t kCf = 1u << 0, kFixed1 = 1u << 1, kPf = 1u << 2, kAf = 1u << 4,
                          kZf = 1u << 6, kSf = 1u << 7, kTf = 1u << 8, kIf = 1u << 9,
                          kDf = 1u << 10, kOf = 1u << 11, kIopl = 3u << 12, kNt = 1u << 14,
                          kRf = 1u << 16, kVm = 1u << 17, kAc = 1u << 18, kVif = 1u << 19,
                          kVip = 1u << 20, kId = 1u << 21;
inline constexpr uint64_t kArithmetic = kCf | kPf | kAf | kZf | kSf | kOf;
}  // namespace rflags

struct CpuState {
  std::array<uint64_t, 16> gpr{};
  uint64_t rip = 0xfff0;
  // RFLAGS without the six arithmetic flags, which live in `flags` until materialized.
  uint64_t rflags = rflags::kFixed1;
  LazyFlags flags;
  std::array<SegmentCache, 6> segment{};
  SegmentCache ldtr{0, 0, 0xffff, 0x82};
  SegmentCache tr{0, 0, 0xffff, 0x8b};
  DescriptorTableRegister gdtr, idtr;
  uint64_t cr0 = cr0::kEt | cr0::kNw | cr0::kCd, cr2 = 0, cr3 = 0, cr4 = 0, cr8 = 0;
  // DR0-DR7; DR4/DR5 are unused (MOV DR4/DR5 reaches DR6/DR7 or raises #UD with CR4.DE).
  std::array<uint64_t, 8> dr{0, 0, 0, 0, 0, 0, dr6::kInitial, dr7::kInitial};
  // EFER, the system-call MSRs, TSC offset, PAT, MTRRs, ...; FS_BASE/GS_BASE are segment[kFs/
  // kGs].base. Cpu::reset() loads the power-on values (APIC_BASE differs on the BSP).
  MsrState msr = msr_power_on_state(false);
  uint8_t cpl = 0;
  // Interrupts are inhibited for one instruction after STI, MOV SS and POP SS (SDM 6.8.3).
  bool interrupt_shadow = false;
  bool halted = false;
  bool nmi_blocked = false;
  // An application processor after INIT, waiting for its SIPI (MP spec B.4).
  bool waiting_for_startup = false;
  // MOV SS and POP SS also hold #DB (single step, breakpoints) until after the next
  // instruction (SDM 6.8.3); set only together with interrupt_shadow. The DR6 bits (B0-B3,
  // BS) of the #DB traps held meanwhile are in pending_debug.
  bool debug_shadow = false;
  uint16_t pending_debug = 0;
  // x87/MMX/SSE registers, operated on by the SIMD unit (simd/simd_unit.h).
  SimdState simd;
  PendingEvents pending_events;
  ExtendedSimdState extended_simd;
  // PAE paging's PDPTE registers, loaded by MOV to CR0/CR3/CR4 (system/control_registers);
  // without them (a loader or a restore set CR3 directly) page walks read the PDPTEs.
  std::array<uint64_t, 4> pae_pdptes{};
  bool pae_pdptes_loaded = false;

  uint64_t read_rflags() const { return rflags | flags.materialize(); }
  void write_rflags(uint64_t value) {
    rflags = (value & ~rflags::kArithmetic) | rflags::kFixed1;
    flags.set_materialized(value & rflags::kArithmetic);
  }
  bool long_mode_active() const { return msr.efer & efer::kLma; }
  bool protected_mode() const { return cr0 & cr0::kPe; }
  bool virtual_8086() const { return rflags & rflags::kVm; }
  uint8_t iopl() const { return static_cast<uint8_t>((rflags & rflags::kIopl) >> 12); }
  // The registers a page walk and a control-register write take (system/page_walker.h).
  PagingRegisters paging_registers() const {
    return PagingRegisters{cr0, cr3, cr4, msr.efer, pae_pdptes, pae_pdptes_loaded};
  }
};

}  // namespace lamina::cpu::x86
