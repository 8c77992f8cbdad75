#pragma once
// Conversion between the built-in CPU's architectural state (cpu::x86::CpuState) and KVM's
// register blocks, so a boot state (machine/boot_state.h) or a saved state starts a guest on
// either accelerator and a state read from either restores on the other. Covered: general
// registers, RIP, RFLAGS, segments with their hidden parts, GDTR/IDTR, control registers, EFER,
// debug registers, the MSRs of kStateMsrs (system-call MSRs, PAT, MTRRs, MISC_ENABLE), the TSC
// (as the guest sees it: CpuState keeps it as an offset from the machine's TSC base, the
// clock both backends share), x87/MMX/SSE (KVM_GET_FPU's FXSAVE-shaped block), MXCSR, XCR0 and
// AVX's upper YMM halves (the XSAVE area), and KVM_GET_VCPU_EVENTS (interrupt shadow, NMI
// blocking, an NMI KVM holds, an exception or interrupt whose delivery KVM had begun).
// MsrState fields KVM does not keep (APIC_BASE is the LAPIC's; AMD performance counters,
// SYSCFG/HWCR, machine-check registers) come from the caller's copy, unchanged.
//
// Thread-safety: pure functions.

#include <linux/kvm.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "cpu/x86/cpu_state.h"

namespace lamina::accel::kvm {

inline constexpr uint32_t kMsrTsc = 0x10;  // IA32_TSC (SDM Vol. 3B 17.17)

// The MSRs that carry CpuState::msr besides EFER and the TSC (SDM Vol. 4 table 2-2; MTRRs
// 11.11, whose 8 variable pairs are KVM's KVM_NR_VAR_MTRR too).
inline constexpr std::array<uint32_t, 39> kStateMsrs = {
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0xc0000081,  // STAR
    0xc0000082,  // LSTAR
    0xc0000083,  // CSTAR
    0xc0000084,  // SFMASK (FMASK)
    0xc0000102,  // KERNEL_GS_BASE
    0xc0000103,  // TSC_AUX
    0x277,       // IA32_PAT
    0x1a0,       // IA32_MISC_ENABLE
    0x2ff,       // IA32_MTRR_DEF_TYPE
    0x250, 0x258, 0x259,                                     // fixed-range MTRRs
    0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,  // fixed 4K ranges
    0x200, 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207,  // variable MTRR base/mask pairs
    0x208, 0x209, 0x20a, 0x20b, 0x20c, 0x20d, 0x20e, 0x20f,
};

// Where kStateMsrs[index] lives in MsrState.
uint64_t& state_msr(cpu::x86::MsrState& msrs, size_t index);
uint64_t state_msr(const cpu::x86::MsrState& msrs, size_t index);

// XSAVE area offsets (SDM Vol. 1 13.4, standard format as KVM_GET_XSAVE returns it): MXCSR in
// the legacy region, XSTATE_BV in the header, AVX (component 2) at 576 (CPUID.(0DH,2).EBX on
// every processor with AVX).
inline constexpr size_t kXsaveMxcsrOffset = 24;
inline constexpr size_t kXsaveStateBitmapOffset = 512;
inline constexpr size_t kXsaveAvxOffset = 576;
inline constexpr size_t kXsaveAvxBytes = 256;
inline constexpr uint64_t kXcr0Avx = 4;

struct KvmCpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};  // apic_base and interrupt_bitmap are the caller's
  kvm_fpu fpu{};      // mxcsr goes through the XSAVE area (KVM_SET_FPU ignores it)
  kvm_debugregs debug{};
  std::array<uint64_t, kStateMsrs.size()> msrs{};  // in kStateMsrs order
  uint64_t tsc = 0;                                // IA32_TSC as the guest reads it
  kvm_xcrs xcrs{};                                 // XCR0
  std::array<std::array<uint8_t, 16>, 16> ymm_high{};
  kvm_vcpu_events events{};
};

// `tsc_base` is the machine's TSC base now (CpuEnvironment::read_tsc): the guest's TSC is the
// base plus MsrState::tsc_offset on both backends.
KvmCpuState to_kvm(const cpu::x86::CpuState& state, uint64_t tsc_base);
// `other_msrs` supplies the MsrState fields KVM does not hold.
cpu::x86::CpuState from_kvm(const KvmCpuState& state, uint64_t tsc_base,
                            const cpu::x86::MsrState& other_msrs);

// The XSAVE area's MXCSR and AVX component, in and out (an area too small for AVX has none).
void store_xsave(const KvmCpuState& state, std::span<std::byte> area);
void load_xsave(std::span<const std::byte> area, KvmCpuState& state);

// The segment forms, exposed for tests.
kvm_segment to_kvm_segment(const cpu::x86::SegmentCache& segment);
cpu::x86::SegmentCache from_kvm_segment(const kvm_segment& segment);

}  // namespace lamina::accel::kvm
