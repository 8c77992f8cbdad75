#pragma once
// The CPUID table a KVM vCPU gets, for either CPU model (accelerator.h, CpuModelKind).
//
// Lamina's model (the default): CpuidModel's leaves (cpuid_table.h), exactly what the built-in
// CPU presents for the same CpuFeatures, after reduce_to_support(kvm_support(...)) dropped each
// feature KVM cannot run on this host. One value is the host's because it must be: the timing
// leaf 0x40000010 EAX reports the TSC rate KVM runs the vCPU at (the host's; no TSC scaling).
// KVM itself keeps CPUID.1:ECX.OSXSAVE, CPUID.1:EDX.APIC and leaf 0xD EBX following CR4,
// APIC_BASE and XCR0 at run time, as CpuidModel does with CpuidState.
//
// The host's model (guest_cpuid_from_host): what KVM can virtualize on this host
// (KVM_GET_SUPPORTED_CPUID), filtered to what Lamina's platform provides. The instruction set is
// the host's (hardware runs it); everything that depends on devices or on the hypervisor is
// Lamina's:
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
// Thread-safety: pure functions.

#include <linux/kvm.h>

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/x86/system/cpu_features.h"
#include "cpu/x86/system/cpuid_model.h"
#include "cpu/x86/system/cpuid_table.h"

namespace lamina::accel::kvm {

// `features` supplies vcpu_count, the hypervisor signature, bus_khz, and the x2apic and
// tsc_deadline switches; `tsc_khz` is the guest TSC rate KVM runs the vCPU at.
std::vector<kvm_cpuid_entry2> guest_cpuid_from_host(std::span<const kvm_cpuid_entry2> supported,
                                          const cpu::x86::CpuFeatures& features,
                                          uint32_t vcpu_index, uint32_t tsc_khz);

// What KVM runs on this host, as reduce_to_support reads it: KVM_GET_SUPPORTED_CPUID's feature
// words, plus the bits Lamina's platform provides itself (the APIC and x2APIC, its LAPIC being a
// user-space device; the hypervisor bit; the topology bits HTT and CmpLegacy), less TSC-deadline
// (KVM offers it for its in-kernel LAPIC; Lamina's deadline timer counts the machine's TSC, not
// the host's that the guest reads on KVM). The address width is the host's (0x80000008 EAX).
cpu::x86::CpuidSupport kvm_support(std::span<const kvm_cpuid_entry2> supported);

// Lamina's model for vCPU `vcpu_index`: cpuid_table(model) with the timing leaf's TSC rate
// replaced by `tsc_khz`, the rate KVM runs the vCPU at. `model` must already be reduced to
// kvm_support.
std::vector<kvm_cpuid_entry2> guest_cpuid_from_model(const cpu::x86::CpuidModel& model,
                                                     uint32_t vcpu_index, uint32_t tsc_khz);

// The feature words (cpuid_table.h) KVM applied differently from the table it was given, one
// line each ("CPUID 0x1.0 ECX 0x80202000 -> 0xf6f83203"); empty when it applied them as given.
std::vector<std::string> feature_overrides(std::span<const kvm_cpuid_entry2> given,
                                           std::span<const kvm_cpuid_entry2> applied);

// A KVM table in the backend-neutral form (for comparing what two machines present).
std::vector<cpu::x86::CpuidEntry> to_cpuid_table(std::span<const kvm_cpuid_entry2> table);

}  // namespace lamina::accel::kvm
