#pragma once
// The model-specific registers of one vCPU: RDMSR/WRMSR semantics with the architectural checks
// (reserved bits, canonical addresses, valid memory types) and #GP for every MSR the CPU model
// does not have. Intel SDM Vol. 4 (MSR tables), Vol. 3A 2.2.1 (EFER), 11.11 (MTRRs), 11.12
// (PAT), 17.17 (TSC); AMD APM Vol. 2 appendix A.
//
// What it does not do (the core's job): WRMSR side effects on the rest of the CPU (a change of
// EFER.NXE or of PAT must flush the TLB; EFER.LMA is set by the core when paging turns on with
// LME, via set_long_mode_active); CPL checks (RDMSR/WRMSR at CPL > 0 are #GP before this).
// The TSC is clock() + offset, where clock is the vCPU's time base handed in (the host clock
// scaled to the advertised frequency, or an instruction count). TSC_DEADLINE is routed to the
// LAPIC through hooks.
//
// MSRs kept without further effect (documented so nobody mistakes them for features):
// MISC_ENABLE (stored), BIOS_SIGN_ID/PATCH_LEVEL 0x8b (reads 0, writes ignored), AMD SYSCFG and
// HWCR (stored), AMD INT_PENDING_MSG (reads 0: no C1E; Linux reads it on K8-class models for
// erratum 400), SYSENTER_CS/ESP/EIP (stored; the instructions are the core's), MTRRs (stored
// and validated; Lamina's memory is always write-back). AMD's performance counters (the legacy
// four at 0xC0010000, and the six PERFCTR_CORE ones at 0xC0010200 when advertised) are stored
// and count nothing, as a PMU whose events never occur. The machine-check MSRs (MCG_CAP,
// MCG_STATUS, MCG_CTL and each bank's CTL/STATUS/ADDR/MISC, with MCA) hold what is written under
// KVM's rules and no error is ever reported.
//
// The values live in one place, the vCPU's MsrStorage: its MsrState (in the core's CpuState,
// so the state a checkpoint or a migration moves is the state RDMSR, SYSCALL and the page
// walker use) and its FS/GS segment bases, which FS_BASE/GS_BASE are. MsrFile holds the rules.
//
// Ownership: borrows the storage it is given (which must outlive it), or owns one of its own
// (the constructor without storage, for tools and tests); the hooks' targets must outlive it.
// Thread-safety: one MsrFile per vCPU, used by that vCPU's thread only.

#include <array>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <utility>

#include "cpu/x86/system/cpu_features.h"
#include "cpu/x86/system/fault.h"

namespace lamina::cpu::x86 {

namespace msr {
inline constexpr uint32_t kTsc = 0x10;
inline constexpr uint32_t kApicBase = 0x1b;
inline constexpr uint32_t kBiosSignId = 0x8b;
inline constexpr uint32_t kMtrrCap = 0xfe;
inline constexpr uint32_t kSysenterCs = 0x174;
inline constexpr uint32_t kSysenterEsp = 0x175;
inline constexpr uint32_t kSysenterEip = 0x176;
inline constexpr uint32_t kMcgCap = 0x179;
inline constexpr uint32_t kMcgStatus = 0x17a;
inline constexpr uint32_t kMcgCtl = 0x17b;
inline constexpr uint32_t kMiscEnable = 0x1a0;
inline constexpr uint32_t kMtrrPhysBase0 = 0x200;  // base/mask pairs up to 0x20f
inline constexpr uint32_t kMtrrFix64k00000 = 0x250;
inline constexpr uint32_t kMtrrFix16k80000 = 0x258;
inline constexpr uint32_t kMtrrFix16kA0000 = 0x259;
inline constexpr uint32_t kMtrrFix4kC0000 = 0x268;  // eight registers up to 0x26f
inline constexpr uint32_t kPat = 0x277;
inline constexpr uint32_t kMtrrDefType = 0x2ff;
inline constexpr uint32_t kMc0Ctl = 0x400;  // bank i: CTL, STATUS, ADDR, MISC at 0x400 + 4i
inline constexpr uint32_t kTscDeadline = 0x6e0;
inline constexpr uint32_t kEfer = 0xc0000080;
inline constexpr uint32_t kStar = 0xc0000081;
inline constexpr uint32_t kLstar = 0xc0000082;
inline constexpr uint32_t kCstar = 0xc0000083;
inline constexpr uint32_t kSfmask = 0xc0000084;
inline constexpr uint32_t kFsBase = 0xc0000100;
inline constexpr uint32_t kGsBase = 0xc0000101;
inline constexpr uint32_t kKernelGsBase = 0xc0000102;
inline constexpr uint32_t kTscAux = 0xc0000103;
inline constexpr uint32_t kAmdPerfEventSelect0 = 0xc0010000;  // four selects, then four counters
inline constexpr uint32_t kAmdPerfCounter0 = 0xc0010004;
inline constexpr uint32_t kAmdSyscfg = 0xc0010010;
inline constexpr uint32_t kAmdHwcr = 0xc0010015;
inline constexpr uint32_t kAmdIntPendingMessage = 0xc0010055;
inline constexpr uint32_t kAmdCorePerfControl0 = 0xc0010200;  // select/counter pairs to 0xc001020b
}  // namespace msr

inline constexpr uint32_t kVariableMtrrCount = 8;
inline constexpr uint32_t kMaxMachineCheckBanks = 32;
inline constexpr uint32_t kAmdCoreCounters = 6;  // PERFCTR_CORE; the legacy MSRs alias 0-3
inline constexpr uint32_t kAmdLegacyCounters = 4;
inline constexpr uint64_t kApicBaseBsp = uint64_t{1} << 8;
inline constexpr uint64_t kApicBaseEnable = uint64_t{1} << 11;
inline constexpr uint64_t kApicBaseExtended = uint64_t{1} << 10;  // x2APIC mode (EXTD)
inline constexpr uint64_t kDefaultApicBase = 0xfee00000;
inline constexpr uint64_t kPatPowerOn = 0x0007040600070406;  // SDM 11.12.4

// Every MSR value but the FS/GS bases (in the segment registers), for checkpoints and
// migration. `tsc_offset` is relative to the clock. Power-on values: msr_power_on_state().
struct MsrState {
  uint64_t efer = 0;
  uint64_t star = 0, lstar = 0, cstar = 0, sfmask = 0;
  uint64_t kernel_gs_base = 0;
  uint64_t tsc_offset = 0;
  uint64_t tsc_aux = 0;
  uint64_t apic_base = 0;
  uint64_t pat = kPatPowerOn;
  uint64_t sysenter_cs = 0, sysenter_esp = 0, sysenter_eip = 0;
  uint64_t misc_enable = 1;  // fast strings
  uint64_t mtrr_default_type = 0;
  std::array<uint64_t, 11> mtrr_fixed{};  // 0x250, 0x258, 0x259, 0x268..0x26f
  std::array<uint64_t, 2 * kVariableMtrrCount> mtrr_variable{};  // base, mask, base, mask, ...
  uint64_t amd_syscfg = 0, amd_hwcr = 0;
  std::array<uint64_t, kAmdCoreCounters> perf_event_select{}, perf_counter{};
  uint64_t mcg_status = 0, mcg_ctl = 0;
  std::array<uint64_t, 4 * kMaxMachineCheckBanks> machine_check_banks{};  // CTL, STATUS, ADDR, MISC
  friend bool operator==(const MsrState&, const MsrState&) = default;
};

// The MSRs after RESET (SDM 9.1.4, 10.4.4): APIC_BASE at 0xfee00000, enabled, with the BSP
// flag on the bootstrap processor; PAT and MISC_ENABLE at their power-on values; the rest 0.
MsrState msr_power_on_state(bool bootstrap);

// Where a vCPU's MSR values live.
struct MsrStorage {
  MsrState& msrs;
  uint64_t& fs_base;
  uint64_t& gs_base;
};

struct MsrHooks {
  // The TSC time base; must be monotonic. Without it the TSC reads as its offset alone.
  std::function<uint64_t()> clock;
  // TSC_DEADLINE (only with CpuFeatures::tsc_deadline): the LAPIC owns the value.
  std::function<uint64_t()> read_tsc_deadline;
  std::function<void(uint64_t)> write_tsc_deadline;
  // Whether CR0.PG = 1: EFER.LME cannot change while paging is on (SDM 2.2.1).
  std::function<bool()> paging_enabled;
};

class MsrFile {
 public:
  // Over the vCPU's storage, whose values it leaves as they are.
  MsrFile(const CpuFeatures& features, MsrStorage storage, MsrHooks hooks = {});
  // With storage of its own at the power-on values; `bootstrap` marks the BSP in APIC_BASE.
  MsrFile(const CpuFeatures& features, bool bootstrap, MsrHooks hooks = {});

  // RDMSR / WRMSR. The error is #GP(0).
  [[nodiscard]] std::expected<uint64_t, Fault> read(uint32_t index) const;
  [[nodiscard]] std::expected<void, Fault> write(uint32_t index, uint64_t value);

  // RDPMC's counter `index` (ECX): AMD's legacy four, six with PERFCTR_CORE; #GP(0) beyond.
  [[nodiscard]] std::expected<uint64_t, Fault> read_performance_counter(uint32_t index) const;

  // Fast accessors for the instructions that use these MSRs directly.
  uint64_t efer() const { return state_->efer; }
  void set_long_mode_active(bool active);  // EFER.LMA, set by the core on CR0.PG changes
  uint64_t star() const { return state_->star; }
  uint64_t lstar() const { return state_->lstar; }
  uint64_t cstar() const { return state_->cstar; }
  uint64_t sfmask() const { return state_->sfmask; }
  uint64_t fs_base() const { return *fs_base_; }
  uint64_t gs_base() const { return *gs_base_; }
  uint64_t kernel_gs_base() const { return state_->kernel_gs_base; }
  // Loads of FS/GS (MOV, POP, WRFSBASE) set the bases without MSR checks; the core checks.
  void set_fs_base(uint64_t base) { *fs_base_ = base; }
  void set_gs_base(uint64_t base) { *gs_base_ = base; }
  void swap_gs() { std::swap(*gs_base_, state_->kernel_gs_base); }  // SWAPGS
  uint64_t tsc() const;
  uint64_t tsc_aux() const { return state_->tsc_aux; }
  uint64_t apic_base() const { return state_->apic_base; }
  uint64_t pat() const { return state_->pat; }
  uint64_t sysenter_cs() const { return state_->sysenter_cs; }
  uint64_t sysenter_esp() const { return state_->sysenter_esp; }
  uint64_t sysenter_eip() const { return state_->sysenter_eip; }

  const MsrState& state() const { return *state_; }
  void restore(const MsrState& state) { *state_ = state; }

 private:
  uint64_t clock() const { return hooks_.clock ? hooks_.clock() : 0; }
  std::expected<void, Fault> write_mtrr(uint32_t index, uint64_t value);
  std::expected<uint64_t, Fault> read_mtrr(uint32_t index) const;
  // The slot of a performance-counter MSR in MsrState (counter when `*counter`), or -1.
  int performance_slot(uint32_t index, bool* counter) const;
  bool machine_check_msr(uint32_t index) const;
  std::expected<void, Fault> write_machine_check(uint32_t index, uint64_t value);
  uint64_t efer_allowed() const;
  bool canonical(uint64_t address) const;

  struct OwnedStorage {
    MsrState msrs;
    uint64_t fs_base = 0, gs_base = 0;
  };

  CpuFeatures features_;
  MsrHooks hooks_;
  bool amd_;  // AMD-specific MSRs exist only with the AMD vendor string
  std::unique_ptr<OwnedStorage> owned_;  // only without borrowed storage
  MsrState* state_;
  uint64_t* fs_base_;
  uint64_t* gs_base_;
};

// A valid memory type for PAT entries: UC, WC, WT, WP, WB, UC- (0, 1, 4, 5, 6, 7).
bool is_valid_pat_type(uint8_t type);
// A valid MTRR memory type: UC, WC, WT, WP, WB (0, 1, 4, 5, 6).
bool is_valid_mtrr_type(uint8_t type);

}  // namespace lamina::cpu::x86
