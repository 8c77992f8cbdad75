#include "cpu/x86/system/msr_file.h"

#include <algorithm>

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {

namespace {

using Failure = std::unexpected<Fault>;
Failure general_protection() { return Failure(general_protection_fault(0)); }

// MTRRcap (SDM 11.11.1): VCNT in bits 7:0, FIX (bit 8), WC (bit 10); no SMRR.
constexpr uint64_t kMtrrCapValue = kVariableMtrrCount | (uint64_t{1} << 8) | (uint64_t{1} << 10);

// AMD APM vol. 2 13.2.1: counters are 48 bits wide; event-select bits reserved as in KVM's
// AMD PMU (21, 19 and 63:36), which clears them rather than faulting.
constexpr uint64_t kCounterMask = (uint64_t{1} << 48) - 1;
constexpr uint64_t kEventSelectReserved = 0xfffffff000280000;
// MCG_CAP (SDM 15.3.1.1): bank count in 7:0, MCG_CTL_P (bit 8).
constexpr uint64_t kMcgCtlPresent = uint64_t{1} << 8;
// MCG_STATUS: RIPV, EIPV, MCIP; the rest is reserved.
constexpr uint64_t kMcgStatusWritable = 0x7;
// AMD HWCR bit 18 (McStatusWrEn): MCi_STATUS takes non-zero writes (error injection).
constexpr uint64_t kHwcrMcStatusWriteEnable = uint64_t{1} << 18;

constexpr uint64_t bits_from(unsigned low) { return low >= 64 ? 0 : ~uint64_t{0} << low; }

bool all_bytes_valid_mtrr_types(uint64_t value) {
  for (int i = 0; i < 8; ++i) {
    if (!is_valid_mtrr_type(static_cast<uint8_t>(value >> (8 * i)))) return false;
  }
  return true;
}

// The slot of a fixed-range MTRR in MsrState::mtrr_fixed, or -1.
int fixed_mtrr_slot(uint32_t index) {
  if (index == msr::kMtrrFix64k00000) return 0;
  if (index == msr::kMtrrFix16k80000) return 1;
  if (index == msr::kMtrrFix16kA0000) return 2;
  if (index >= msr::kMtrrFix4kC0000 && index < msr::kMtrrFix4kC0000 + 8) {
    return 3 + static_cast<int>(index - msr::kMtrrFix4kC0000);
  }
  return -1;
}

}  // namespace

bool is_valid_pat_type(uint8_t type) { return type <= 7 && type != 2 && type != 3; }
bool is_valid_mtrr_type(uint8_t type) { return type <= 6 && type != 2 && type != 3; }

MsrState msr_power_on_state(bool bootstrap) {
  MsrState state;
  // SDM 10.4.4: APIC_BASE resets to 0xfee00000 with the global enable set, BSP flag on the BSP.
  state.apic_base = kDefaultApicBase | kApicBaseEnable | (bootstrap ? kApicBaseBsp : 0);
  // Every bank's MCi_CTL reports all errors after reset, as KVM (KVM_X86_SETUP_MCE) and QEMU
  // set them; the hardware leaves them to firmware, which writes all ones (SDM 15.8).
  for (size_t bank = 0; bank < kMaxMachineCheckBanks; ++bank) {
    state.machine_check_banks[4 * bank] = ~uint64_t{0};
  }
  return state;
}

MsrFile::MsrFile(const CpuFeatures& features, MsrStorage storage, MsrHooks hooks)
    : features_(features),
      hooks_(std::move(hooks)),
      amd_(features.vendor == "AuthenticAMD"),
      state_(&storage.msrs),
      fs_base_(&storage.fs_base),
      gs_base_(&storage.gs_base) {}

MsrFile::MsrFile(const CpuFeatures& features, bool bootstrap, MsrHooks hooks)
    : features_(features),
      hooks_(std::move(hooks)),
      amd_(features.vendor == "AuthenticAMD"),
      owned_(std::make_unique<OwnedStorage>()),
      state_(&owned_->msrs),
      fs_base_(&owned_->fs_base),
      gs_base_(&owned_->gs_base) {
  *state_ = msr_power_on_state(bootstrap);
}

bool MsrFile::canonical(uint64_t address) const {
  unsigned bits = std::clamp<unsigned>(features_.linear_address_bits, 32, 63);
  int64_t shifted = static_cast<int64_t>(address << (64 - bits)) >> (64 - bits);
  return static_cast<uint64_t>(shifted) == address;
}

uint64_t MsrFile::efer_allowed() const {
  uint64_t allowed = 0;
  if (features_.syscall) allowed |= efer::kSce;
  if (features_.long_mode) allowed |= efer::kLme | efer::kLma;
  if (features_.nx) allowed |= efer::kNxe;
  if (features_.ffxsr) allowed |= efer::kFfxsr;
  return allowed;
}

void MsrFile::set_long_mode_active(bool active) {
  state_->efer = active ? state_->efer | efer::kLma : state_->efer & ~efer::kLma;
}

uint64_t MsrFile::tsc() const { return clock() + state_->tsc_offset; }

std::expected<uint64_t, Fault> MsrFile::read(uint32_t index) const {
  bool sixty_four = features_.long_mode;
  switch (index) {
    case msr::kTsc:
      if (features_.tsc) return tsc();
      break;
    case msr::kApicBase:
      if (features_.apic) return state_->apic_base;
      break;
    case msr::kBiosSignId: return 0;
    case msr::kSysenterCs: return state_->sysenter_cs;
    case msr::kSysenterEsp: return state_->sysenter_esp;
    case msr::kSysenterEip: return state_->sysenter_eip;
    case msr::kMiscEnable: return state_->misc_enable;
    case msr::kPat:
      if (features_.pat) return state_->pat;
      break;
    case msr::kTscDeadline:
      if (features_.tsc_deadline && hooks_.read_tsc_deadline) return hooks_.read_tsc_deadline();
      break;
    case msr::kEfer: return state_->efer;
    case msr::kStar:
      if (features_.syscall) return state_->star;
      break;
    case msr::kLstar:
      if (sixty_four) return state_->lstar;
      break;
    case msr::kCstar:
      if (sixty_four) return state_->cstar;
      break;
    case msr::kSfmask:
      if (features_.syscall) return state_->sfmask;
      break;
    case msr::kFsBase:
      if (sixty_four) return *fs_base_;
      break;
    case msr::kGsBase:
      if (sixty_four) return *gs_base_;
      break;
    case msr::kKernelGsBase:
      if (sixty_four) return state_->kernel_gs_base;
      break;
    case msr::kTscAux:
      if (features_.rdtscp) return state_->tsc_aux;
      break;
    case msr::kAmdSyscfg:
      if (amd_) return state_->amd_syscfg;
      break;
    case msr::kAmdHwcr:
      if (amd_) return state_->amd_hwcr;
      break;
    case msr::kAmdIntPendingMessage:
      if (amd_) return 0;
      break;
    case msr::kMcgCap:
      if (features_.mca) return features_.machine_check_banks | kMcgCtlPresent;
      break;
    case msr::kMcgStatus:
      if (features_.mca) return state_->mcg_status;
      break;
    case msr::kMcgCtl:
      if (features_.mca) return state_->mcg_ctl;
      break;
    default: {
      bool counter = false;
      if (int slot = performance_slot(index, &counter); slot >= 0) {
        return counter ? state_->perf_counter[slot] : state_->perf_event_select[slot];
      }
      if (machine_check_msr(index)) return state_->machine_check_banks[index - msr::kMc0Ctl];
      if (features_.mtrr) return read_mtrr(index);
      break;
    }
  }
  return general_protection();
}

std::expected<uint64_t, Fault> MsrFile::read_performance_counter(uint32_t index) const {
  const uint32_t counters = !amd_                    ? 0
                            : features_.perfctr_core ? kAmdCoreCounters
                                                     : kAmdLegacyCounters;
  if (index >= counters) return general_protection();
  return state_->perf_counter[index];
}

int MsrFile::performance_slot(uint32_t index, bool* counter) const {
  if (!amd_) return -1;
  if (index >= msr::kAmdPerfEventSelect0 && index < msr::kAmdPerfCounter0 + kAmdLegacyCounters) {
    *counter = index >= msr::kAmdPerfCounter0;
    return static_cast<int>((index - msr::kAmdPerfEventSelect0) % kAmdLegacyCounters);
  }
  // AMD APM vol. 2 13.2.2: PERFCTR_CORE interleaves PerfEvtSeln and PerfCtrn.
  if (features_.perfctr_core && index >= msr::kAmdCorePerfControl0 &&
      index < msr::kAmdCorePerfControl0 + 2 * kAmdCoreCounters) {
    *counter = (index & 1) != 0;
    return static_cast<int>((index - msr::kAmdCorePerfControl0) / 2);
  }
  return -1;
}

bool MsrFile::machine_check_msr(uint32_t index) const {
  return features_.mca && index >= msr::kMc0Ctl &&
         index < msr::kMc0Ctl + 4u * features_.machine_check_banks;
}

std::expected<void, Fault> MsrFile::write_machine_check(uint32_t index, uint64_t value) {
  const uint32_t slot = index - msr::kMc0Ctl;
  switch (slot % 4) {
    case 0:
      // MCi_CTL takes 0 or all ones (SDM 15.3.2.1); like KVM, bit 10 (Linux's K8 GART
      // workaround) and bit 0 (UnixWare) may be clear.
      if (value != 0 && (value | (uint64_t{1} << 10) | 1) != ~uint64_t{0}) {
        return general_protection();
      }
      break;
    case 1:
      // MCi_STATUS takes only 0 unless AMD's HWCR.McStatusWrEn allows error injection.
      if (value != 0 && !(amd_ && (state_->amd_hwcr & kHwcrMcStatusWriteEnable))) {
        return general_protection();
      }
      break;
    default: break;  // ADDR and MISC hold what is written
  }
  state_->machine_check_banks[slot] = value;
  return {};
}

std::expected<void, Fault> MsrFile::write(uint32_t index, uint64_t value) {
  bool sixty_four = features_.long_mode;
  auto store_canonical = [&](uint64_t& slot) -> std::expected<void, Fault> {
    if (!canonical(value)) return general_protection();
    slot = value;
    return {};
  };
  switch (index) {
    case msr::kTsc:
      if (!features_.tsc) break;
      // Writing the TSC moves the offset so the next read continues from `value` (SDM 17.17).
      state_->tsc_offset = value - clock();
      return {};
    case msr::kApicBase: {
      if (!features_.apic) break;
      // Bits 12..MAXPHYADDR-1 hold the base; 10 (x2APIC) only when advertised; BSP is fixed.
      uint64_t writable =
          kApicBaseEnable | (bits_from(12) & ~bits_from(features_.physical_address_bits));
      if (features_.x2apic) writable |= kApicBaseExtended;
      if ((value & ~(writable | kApicBaseBsp)) != 0) return general_protection();
      state_->apic_base = (value & writable) | (state_->apic_base & kApicBaseBsp);
      return {};
    }
    case msr::kBiosSignId: return {};  // microcode loaders write 0 before CPUID; nothing to do
    case msr::kSysenterCs: state_->sysenter_cs = value & 0xffff'ffff; return {};
    case msr::kSysenterEsp: return store_canonical(state_->sysenter_esp);
    case msr::kSysenterEip: return store_canonical(state_->sysenter_eip);
    case msr::kMiscEnable: state_->misc_enable = value; return {};
    case msr::kPat:
      if (!features_.pat) break;
      for (int i = 0; i < 8; ++i) {
        if (!is_valid_pat_type(static_cast<uint8_t>(value >> (8 * i)))) return general_protection();
      }
      state_->pat = value;
      return {};
    case msr::kTscDeadline:
      if (!features_.tsc_deadline || !hooks_.write_tsc_deadline) break;
      hooks_.write_tsc_deadline(value);
      return {};
    case msr::kEfer: {
      if ((value & ~efer_allowed()) != 0) return general_protection();
      bool paging = hooks_.paging_enabled && hooks_.paging_enabled();
      if (paging && ((value ^ state_->efer) & efer::kLme) != 0) return general_protection();
      // LMA is the CPU's status: writes do not change it.
      state_->efer = (value & ~efer::kLma) | (state_->efer & efer::kLma);
      return {};
    }
    case msr::kStar:
      if (!features_.syscall) break;
      state_->star = value;
      return {};
    case msr::kLstar:
      if (!sixty_four) break;
      return store_canonical(state_->lstar);
    case msr::kCstar:
      if (!sixty_four) break;
      return store_canonical(state_->cstar);
    case msr::kSfmask:
      if (!features_.syscall) break;
      // Only the low 32 bits mask RFLAGS; the upper half is kept as zero.
      state_->sfmask = value & 0xffff'ffff;
      return {};
    case msr::kFsBase:
      if (!sixty_four) break;
      return store_canonical(*fs_base_);
    case msr::kGsBase:
      if (!sixty_four) break;
      return store_canonical(*gs_base_);
    case msr::kKernelGsBase:
      if (!sixty_four) break;
      return store_canonical(state_->kernel_gs_base);
    case msr::kTscAux:
      if (!features_.rdtscp) break;
      if ((value >> 32) != 0) return general_protection();
      state_->tsc_aux = value;
      return {};
    case msr::kAmdSyscfg:
      if (!amd_) break;
      state_->amd_syscfg = value;
      return {};
    case msr::kAmdHwcr:
      if (!amd_) break;
      state_->amd_hwcr = value;
      return {};
    case msr::kAmdIntPendingMessage:
      if (!amd_) break;
      return {};  // nothing is pending and C1E never activates
    case msr::kMcgCap: break;  // read-only
    case msr::kMcgStatus:
      if (!features_.mca) break;
      if ((value & ~kMcgStatusWritable) != 0) return general_protection();
      state_->mcg_status = value;
      return {};
    case msr::kMcgCtl:
      // SDM 15.3.1.3: all ones enables every feature, 0 disables them; nothing in between.
      if (!features_.mca || (value != 0 && value != ~uint64_t{0})) break;
      state_->mcg_ctl = value;
      return {};
    default: {
      bool counter = false;
      if (int slot = performance_slot(index, &counter); slot >= 0) {
        if (counter) {
          state_->perf_counter[slot] = value & kCounterMask;
        } else {
          state_->perf_event_select[slot] = value & ~kEventSelectReserved;
        }
        return {};
      }
      if (machine_check_msr(index)) return write_machine_check(index, value);
      if (features_.mtrr) return write_mtrr(index, value);
      break;
    }
  }
  return general_protection();
}

std::expected<uint64_t, Fault> MsrFile::read_mtrr(uint32_t index) const {
  if (index == msr::kMtrrCap) return kMtrrCapValue;
  if (index == msr::kMtrrDefType) return state_->mtrr_default_type;
  if (int slot = fixed_mtrr_slot(index); slot >= 0) return state_->mtrr_fixed[slot];
  if (index >= msr::kMtrrPhysBase0 && index < msr::kMtrrPhysBase0 + 2 * kVariableMtrrCount) {
    return state_->mtrr_variable[index - msr::kMtrrPhysBase0];
  }
  return general_protection();
}

std::expected<void, Fault> MsrFile::write_mtrr(uint32_t index, uint64_t value) {
  uint64_t above_physical = bits_from(features_.physical_address_bits);
  if (index == msr::kMtrrDefType) {
    // SDM Figure 11-6: type in 7:0, FE bit 10, E bit 11; the rest is reserved.
    constexpr uint64_t kWritable = 0xff | (uint64_t{1} << 10) | (uint64_t{1} << 11);
    if ((value & ~kWritable) != 0 || !is_valid_mtrr_type(static_cast<uint8_t>(value))) {
      return general_protection();
    }
    state_->mtrr_default_type = value;
    return {};
  }
  if (int slot = fixed_mtrr_slot(index); slot >= 0) {
    if (!all_bytes_valid_mtrr_types(value)) return general_protection();
    state_->mtrr_fixed[slot] = value;
    return {};
  }
  if (index >= msr::kMtrrPhysBase0 && index < msr::kMtrrPhysBase0 + 2 * kVariableMtrrCount) {
    uint32_t slot = index - msr::kMtrrPhysBase0;
    bool is_mask = (slot & 1) != 0;
    // SDM Figure 11-7: PHYSBASE has the type in 7:0 and 11:8 reserved; PHYSMASK has V in bit
    // 11 and 10:0 reserved; bits from MAXPHYADDR up are reserved in both.
    uint64_t reserved = above_physical | (is_mask ? uint64_t{0x7ff} : uint64_t{0xf00});
    if ((value & reserved) != 0) return general_protection();
    if (!is_mask && !is_valid_mtrr_type(static_cast<uint8_t>(value))) return general_protection();
    state_->mtrr_variable[slot] = value;
    return {};
  }
  // MTRRcap is read-only; anything else is not an MSR of this model.
  return general_protection();
}

}  // namespace lamina::cpu::x86
