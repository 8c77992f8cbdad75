#pragma once
// Conversion between the built-in CPU's architectural state (cpu::x86::CpuState) and KVM's
// register blocks, so a boot state (machine/boot_state.h) or a saved state starts a guest on
// either accelerator. Covered: general registers, RIP, RFLAGS, segments with their hidden parts,
// GDTR/IDTR, control registers, EFER, debug registers, the system-call MSRs of MsrState,
// x87/MMX/SSE (KVM_GET_FPU's FXSAVE-shaped block), the interrupt shadow and NMI blocking.
// Not covered (CpuState has no place for them): AVX and later XSAVE components, the TSC, PAT,
// MTRRs, pending exceptions/interrupts inside KVM.
//
// Thread-safety: pure functions.

#include <linux/kvm.h>

#include <array>
#include <cstdint>

#include "cpu/x86/cpu_state.h"

namespace lamina::accel::kvm {

// The MSRs that carry CpuState::msr (SDM Vol. 4 table 2-2).
inline constexpr std::array<uint32_t, 9> kStateMsrs = {
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0xc0000081,  // STAR
    0xc0000082,  // LSTAR
    0xc0000083,  // CSTAR
    0xc0000084,  // SFMASK (FMASK)
    0xc0000102,  // KERNEL_GS_BASE
    0xc0000103,  // TSC_AUX
};

struct KvmCpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};  // apic_base and interrupt_bitmap are the caller's
  kvm_fpu fpu{};
  kvm_debugregs debug{};
  std::array<uint64_t, kStateMsrs.size()> msrs{};  // in kStateMsrs order
  bool interrupt_shadow = false;
  bool mov_ss_shadow = false;  // the shadow holds #DB too (KVM_X86_SHADOW_INT_MOV_SS, not _STI)
  bool nmi_masked = false;
};

KvmCpuState to_kvm(const cpu::x86::CpuState& state);
cpu::x86::CpuState from_kvm(const KvmCpuState& state);

// The segment forms, exposed for tests.
kvm_segment to_kvm_segment(const cpu::x86::SegmentCache& segment);
cpu::x86::SegmentCache from_kvm_segment(const kvm_segment& segment);

}  // namespace lamina::accel::kvm
