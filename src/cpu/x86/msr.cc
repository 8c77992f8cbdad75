#include "cpu/x86/msr.h"

#include "cpu/x86/core.h"
#include "cpu/x86/system/control_registers.h"

namespace lamina::cpu::x86 {

std::optional<uint64_t> read_model_specific(CpuCore& core, uint32_t index) {
  if (core.environment.platform_msr(index)) return core.environment.read_platform_msr(index);
  const auto value = core.msr_file.read(index);
  if (!value) return std::nullopt;
  return *value;
}

bool write_model_specific(CpuCore& core, uint32_t index, uint64_t value) {
  if (core.environment.platform_msr(index)) {
    if (!core.environment.write_platform_msr(index, value)) return false;
    // The MSR file's copy of IA32_APIC_BASE feeds CPUID's APIC-enable bit and the xAPIC page.
    if (index == msr::kApicBase) {
      (void)core.msr_file.write(index, value);
      core.flush_tlb(true);
    }
    return true;
  }
  const uint64_t old_efer = core.state.msr.efer;
  if (!core.msr_file.write(index, value)) return false;
  switch (index) {
    case msr::kEfer:
      // NXE changes what the cached translations allow (system/control_registers decides).
      if (flush_after_efer_write(old_efer, core.state.msr.efer) == TlbFlush::kAll) {
        core.flush_tlb(true);
      }
      core.update_mode();
      break;
    case msr::kFsBase:
    case msr::kGsBase: core.update_mode(); break;  // effective_base follows the segment bases
    case msr::kPat:
    case msr::kApicBase: core.flush_tlb(true); break;  // memory types; the xAPIC page moved
    default: break;
  }
  return true;
}

}  // namespace lamina::cpu::x86
