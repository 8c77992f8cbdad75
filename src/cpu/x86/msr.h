#pragma once
// RDMSR/WRMSR for the core: the MSRs its own instructions use every time (EFER, the SYSCALL
// and SYSENTER MSRs, FS/GS/KERNEL_GS base, TSC, TSC_AUX) live in CpuState; every other MSR
// (APIC base, PAT, MTRRs, TSC deadline, vendor MSRs) goes to the MSR file of cpu/x86/system,
// which also answers #GP for MSRs the CPU model does not have (SDM vol. 4).

#include <cstdint>
#include <optional>

namespace lamina::cpu::x86 {

struct CpuCore;

std::optional<uint64_t> read_model_specific(CpuCore& core, uint32_t index);
// False means #GP (unknown MSR or a reserved bit set).
bool write_model_specific(CpuCore& core, uint32_t index, uint64_t value);

}  // namespace lamina::cpu::x86
