#pragma once
// The CPUID table a KVM vCPU gets: what KVM can virtualize on this host (KVM_GET_SUPPORTED_CPUID),
// filtered to what Lamina's platform provides. The instruction set is the host's (hardware runs
// it); everything that depends on devices or on the hypervisor is Lamina's:
// - no x2APIC and no TSC-deadline timer unless the CPU model asks for them (the LAPIC is a
//   user-space device; its MSRs reach it through the filter in kvm_system.h);
// - no KVM paravirtual leaves (kvmclock, PV EOI, ...): 0x40000000 is Lamina's "LaminaLamina"
//   signature and 0x40000010 the TSC/bus frequencies, as the built-in CPU reports them;
// - no nested virtualization (VMX/SVM), no MONITOR/MWAIT, no architectural PMU leaf (the PMU's
//   interrupt would need an in-kernel LAPIC);
// - topology for the VM: one package of vcpu_count cores, one thread each, APIC ID = vCPU index
//   (leaf 1, leaf 4 core counts, leaves 0xB/0x1F, AMD 0x80000001 CmpLegacy and 0x80000008 NC;
//   AMD TOPOEXT with its leaves 0x8000001D/E, and leaf 0x80000026, are withdrawn).
// Intel SDM Vol. 2A "CPUID"; AMD CPUID Specification #25481.
//
// Thread-safety: a pure function.

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/x86/system/cpu_features.h"

namespace lamina::accel::kvm {

// `features` supplies vcpu_count, the hypervisor signature, bus_khz, and the x2apic and
// tsc_deadline switches; `tsc_khz` is the guest TSC rate KVM runs the vCPU at.
std::vector<kvm_cpuid_entry2> guest_cpuid(std::span<const kvm_cpuid_entry2> supported,
                                          const cpu::x86::CpuFeatures& features,
                                          uint32_t vcpu_index, uint32_t tsc_khz);

}  // namespace lamina::accel::kvm
