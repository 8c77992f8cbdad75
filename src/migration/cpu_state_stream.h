#pragma once
// The "vcpu" section of a machine state: one vCPU's whole architectural state (CpuState:
// general registers, RIP/RFLAGS, segments with their hidden caches, descriptor tables,
// control and debug registers, every MSR of the one MSR store, x87/MMX/SSE, PAE PDPTEs,
// halted / wait-for-SIPI / interrupt shadow / NMI blocking, and since format 1.1 the events a
// KVM vCPU held and XCR0 with AVX's upper YMM halves, which only KVM uses: the built-in CPU has
// no XSAVE, ARCHITECTURE.md). A 1.0 section without them loads with none.
//
// Stateless functions; thread-safety: the CpuState's (a stopped vCPU).

#include "base/error.h"
#include "base/state_stream.h"
#include "cpu/x86/cpu_state.h"

namespace lamina::migration {

void save_cpu_state(StateWriter& writer, const cpu::x86::CpuState& state);
// Reads what save_cpu_state wrote and checks what a vCPU could never hold (CPL above 3,
// reserved RFLAGS/MXCSR bits, long mode without paging, segment attribute bits that do not
// exist); the error names the field.
[[nodiscard]] Result<cpu::x86::CpuState> load_cpu_state(StateReader& reader);

}  // namespace lamina::migration
