#pragma once
// The model-specific registers the core implements itself (SDM vol. 4): TSC, APIC base,
// SYSENTER, PAT, EFER, the SYSCALL and segment-base MSRs, TSC_AUX. An unknown MSR is #GP, as
// on hardware; the guest's rdmsr_safe paths rely on that.

#include <cstdint>
#include <optional>

namespace lamina::cpu::x86 {

struct CpuCore;

std::optional<uint64_t> read_model_specific(CpuCore& core, uint32_t index);
// False means #GP (unknown MSR or a reserved bit set).
bool write_model_specific(CpuCore& core, uint32_t index, uint64_t value);

}  // namespace lamina::cpu::x86
