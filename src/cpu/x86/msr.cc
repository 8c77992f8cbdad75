#include "cpu/x86/msr.h"

#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {
namespace {

namespace index {
constexpr uint32_t kTsc = 0x10, kSysenterCs = 0x174, kSysenterEsp = 0x175,
                   kSysenterEip = 0x176, kEfer = 0xc0000080,
                   kStar = 0xc0000081, kLstar = 0xc0000082, kCstar = 0xc0000083,
                   kSfmask = 0xc0000084, kFsBase = 0xc0000100, kGsBase = 0xc0000101,
                   kKernelGsBase = 0xc0000102, kTscAux = 0xc0000103;
}

bool canonical(uint64_t address) {
  return static_cast<uint64_t>(static_cast<int64_t>(address << 16) >> 16) == address;
}

}  // namespace

std::optional<uint64_t> read_model_specific(CpuCore& core, uint32_t msr) {
  const CoreMsrs& m = core.state.msr;
  if (core.environment.platform_msr(msr)) return core.environment.read_platform_msr(msr);
  switch (msr) {
    case index::kTsc: return core.environment.read_tsc() + m.tsc_offset;
    case index::kSysenterCs: return m.sysenter_cs;
    case index::kSysenterEsp: return m.sysenter_esp;
    case index::kSysenterEip: return m.sysenter_eip;
    case index::kEfer: return core.state.efer;
    case index::kStar: return m.star;
    case index::kLstar: return m.lstar;
    case index::kCstar: return m.cstar;
    case index::kSfmask: return m.sfmask;
    case index::kFsBase: return core.state.segment[kFs].base;
    case index::kGsBase: return core.state.segment[kGs].base;
    case index::kKernelGsBase: return m.kernel_gs_base;
    case index::kTscAux: return m.tsc_aux;
    default: {
      const auto value = core.msr_file.read(msr);
      if (!value) return std::nullopt;
      return *value;
    }
  }
}

bool write_model_specific(CpuCore& core, uint32_t msr, uint64_t value) {
  CoreMsrs& m = core.state.msr;
  if (core.environment.platform_msr(msr)) {
    if (!core.environment.write_platform_msr(msr, value)) return false;
    // The MSR file's copy only feeds the core's own view (CPUID's APIC-enable bit).
    if (msr == 0x1b) (void)core.msr_file.write(msr, value);  // IA32_APIC_BASE
    return true;
  }
  switch (msr) {
    case index::kTsc: m.tsc_offset = value - core.environment.read_tsc(); return true;
    case index::kSysenterCs: m.sysenter_cs = value & 0xffff; return true;
    case index::kSysenterEsp: if (!canonical(value)) return false; m.sysenter_esp = value; return true;
    case index::kSysenterEip: if (!canonical(value)) return false; m.sysenter_eip = value; return true;
    case index::kEfer: {
      constexpr uint64_t kWritable = efer::kSce | efer::kLme | efer::kNxe;
      if (value & ~(kWritable | efer::kLma)) return false;
      // LME may not change while paging is on (SDM 9.8.5).
      if ((core.state.cr0 & cr0::kPg) && ((value ^ core.state.efer) & efer::kLme)) return false;
      core.state.efer = (value & kWritable) | (core.state.efer & efer::kLma);
      core.flush_tlb(true);
      return true;
    }
    case index::kStar: m.star = value; return true;
    case index::kLstar: if (!canonical(value)) return false; m.lstar = value; return true;
    case index::kCstar: if (!canonical(value)) return false; m.cstar = value; return true;
    case index::kSfmask: m.sfmask = value & 0xffffffffu; return true;
    case index::kFsBase:
      if (!canonical(value)) return false;
      core.state.segment[kFs].base = value;
      core.update_mode();
      return true;
    case index::kGsBase:
      if (!canonical(value)) return false;
      core.state.segment[kGs].base = value;
      core.update_mode();
      return true;
    case index::kKernelGsBase: if (!canonical(value)) return false; m.kernel_gs_base = value; return true;
    case index::kTscAux: m.tsc_aux = value & 0xffffffffu; return true;
    default: return core.msr_file.write(msr, value).has_value();
  }
}

}  // namespace lamina::cpu::x86
