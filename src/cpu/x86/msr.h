#pragma once
// RDMSR/WRMSR for the core: the platform's MSRs (the LAPIC's, CpuEnvironment::platform_msr)
// go to the environment; every other MSR to the vCPU's MSR file (system/msr_file), the one
// store (CpuState::msr), which answers #GP for MSRs the CPU model does not have (SDM vol. 4).
// Here are only the side effects a write has on the rest of the core (TLB, code mode).

#include <cstdint>
#include <optional>

namespace lamina::cpu::x86 {

struct CpuCore;

std::optional<uint64_t> read_model_specific(CpuCore& core, uint32_t index);
// False means #GP (unknown MSR or a reserved bit set).
bool write_model_specific(CpuCore& core, uint32_t index, uint64_t value);

}  // namespace lamina::cpu::x86
