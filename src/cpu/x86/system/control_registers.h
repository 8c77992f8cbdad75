#pragma once
// MOV to CR0, CR3 and CR4 as pure functions: the architectural #GP(0) checks, the paging-mode
// transitions (EFER.LMA on and off, PAE PDPTE loads) and what each write must flush from the
// soft TLB (tlb.h). Intel SDM Vol. 3A 2.5, 4.1.1-4.1.2 (Figure 4-1), 4.4.1, 4.10.4.1;
// Vol. 2B MOV (control registers).
//
// The core: checks CPL 0 (else #GP(0)) and passes the full operand (32 bits outside 64-bit
// mode); on success it stores the returned registers, mirrors EFER.LMA into the MSR file
// (MsrFile::set_long_mode_active) and performs the flush. CS.L does not change here: a far
// transfer into a 64-bit code segment enters 64-bit mode afterwards.
//
// Thread-safety: stateless.

#include <cstdint>
#include <expected>

#include "base/guest_memory.h"
#include "cpu/x86/system/cpu_features.h"
#include "cpu/x86/system/fault.h"
#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {

enum class TlbFlush : uint8_t { kNone, kNonGlobal, kAll };

struct ControlRegisterWrite {
  PagingRegisters registers;  // all of CR0/CR3/CR4/EFER (LMA) and the PDPTE registers after it
  TlbFlush flush = TlbFlush::kNone;
};

// The CR4 bits this CPU model lets software set (the others are reserved: #GP on a write of 1).
uint64_t cr4_writable_bits(const CpuFeatures& features);

// `mode_64`: the write executes in 64-bit mode (EFER.LMA = 1 and CS.L = 1).
std::expected<ControlRegisterWrite, Fault> write_cr0(const PagingRegisters& current, uint64_t value,
                                                     bool mode_64, const CpuFeatures& features,
                                                     const GuestMemory& memory);
std::expected<ControlRegisterWrite, Fault> write_cr3(const PagingRegisters& current, uint64_t value,
                                                     const CpuFeatures& features,
                                                     const GuestMemory& memory);
std::expected<ControlRegisterWrite, Fault> write_cr4(const PagingRegisters& current, uint64_t value,
                                                     const CpuFeatures& features,
                                                     const GuestMemory& memory);

// After the MSR file accepted an EFER write: the soft TLB caches execute rights, so an NXE
// change flushes everything.
TlbFlush flush_after_efer_write(uint64_t old_efer, uint64_t new_efer);

}  // namespace lamina::cpu::x86
