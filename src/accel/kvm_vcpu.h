#pragma once
// KvmVcpu: one vCPU of a KVM virtual machine behind the Vcpu interface. run() enters the guest
// with KVM_RUN and turns KVM's exits into CpuEnvironment calls: port I/O, MMIO (including the
// local APIC page, which no memory slot covers), the local APIC's MSRs (filter and "invalid"
// MSR exits go to the environment's platform MSRs). Lamina's interrupt controllers are user-space
// devices, so interrupts are injected here: KVM_INTERRUPT when KVM says the guest can take one,
// else an interrupt-window exit is requested; NMIs through KVM_NMI. HLT leaves the vCPU halted
// until an interrupt it can take or an NMI arrives (kHalted meanwhile); INIT puts it in the
// wait-for-SIPI state (kWaitForStartup), a SIPI starts it at vector << 12 (SDM Vol. 3A 9.4.4);
// application processors are created in that state. KVM's shutdown exit (triple fault) and any
// exit KVM cannot handle become kShutdown with the reason.
//
// Ownership: owns the vCPU descriptor and its mapped run area; borrows the environment and the
// kick signal number (the accelerator keeps the handler installed). Thread-safety: run(),
// state(), set_state() on the vCPU's thread (or while it is stopped); kick(), request_*() and
// startup() from any thread.

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "accel/accelerator.h"
#include "accel/kvm_abi.h"
#include "accel/kvm_state.h"
#include "accel/kvm_system.h"

namespace lamina::accel::kvm {

// The vCPU's kvm_run area, mapped from its descriptor.
class RunArea {
 public:
  static Result<RunArea> map(int vcpu_fd, size_t size);
  RunArea(RunArea&& other) noexcept;
  RunArea& operator=(RunArea&&) = delete;
  RunArea(const RunArea&) = delete;
  RunArea& operator=(const RunArea&) = delete;
  ~RunArea();

  kvm_run* get() const { return run_; }
  size_t size() const { return size_; }

 private:
  RunArea(kvm_run* run, size_t size) : run_(run), size_(size) {}
  kvm_run* run_;
  size_t size_;
};

class KvmVcpu final : public Vcpu {
 public:
  // `cpuid` is the table for this vCPU (kvm_cpuid.h).
  static Result<std::unique_ptr<KvmVcpu>> create(const KvmSystem& system, const KvmVm& vm,
                                                 uint32_t index,
                                                 cpu::x86::CpuEnvironment& environment,
                                                 std::span<const kvm_cpuid_entry2> cpuid,
                                                 int kick_signal);

  // Machine-check architecture as the built-in CPU's model has it (MCG_CAP with `banks` banks
  // and MCG_CTL_P), as far as this host's KVM supports (KVM_X86_SETUP_MCE; without it KVM's
  // MCG_CAP is 0, and a guest's MCE setup finds no banks). No KVM_CAP_MCE: nothing to do.
  Result<void> setup_machine_check(const KvmSystem& system, uint8_t banks);
  // The CPUID table KVM applied (KVM_GET_CPUID2), which a KVM may have changed from the one
  // given: PVM puts the hardware's feature bits into leaves 1 and 7, as its guests run their
  // instructions natively.
  Result<std::vector<kvm_cpuid_entry2>> applied_cpuid() const;

  VcpuExit run(uint64_t budget) override;
  void kick() override;
  void request_interrupt() override;
  void request_nmi() override;
  void request_init() override;
  void startup(uint8_t vector) override;
  cpu::x86::CpuState state() const override;
  void set_state(const cpu::x86::CpuState& state) override;
  void restore_state(const cpu::x86::CpuState& state) override;
  // The hardware reads guest RAM directly: there are no cached translations to drop.
  void invalidate_code(uint64_t, uint64_t) override {}
  // The VM's dirty log (KvmDirtyLog, driven by the accelerator) sees every store this vCPU
  // makes; there are no write translations to drop.
  bool restart_write_logging() override { return true; }

 private:
  KvmVcpu(UniqueFd fd, RunArea run, cpu::x86::CpuEnvironment& environment, uint32_t index,
          int kick_signal);
  // Makes KVM_RUN return (or not start) soon; `flag` says why.
  void interrupt_guest(std::atomic<bool>& flag);
  void clear_immediate_exit();
  // Injects what the environment has pending; false when the vCPU stays halted.
  bool deliver_pending_events();
  bool handle_io();
  void handle_mmio();
  void handle_msr(bool write);
  // INIT: the SDM's INIT state (Vol. 3A table 9-1), then wait for a SIPI.
  void enter_wait_for_startup();
  void start_at(uint8_t vector);
  VcpuExit shutdown(std::string reason) const;
  VcpuExit internal_error() const;
  // What write_state writes: the registers only (INIT and SIPI keep the MSRs, the TSC and
  // XCR0), or the whole state (set_state, restores).
  enum class StateScope : uint8_t { kRegisters, kWhole };
  Result<void> write_state(const cpu::x86::CpuState& state,
                           StateScope scope = StateScope::kWhole);
  Result<cpu::x86::CpuState> read_state() const;
  // MXCSR and AVX: KVM_GET_FPU/KVM_SET_FPU leave them out, so they go through the XSAVE area.
  Result<std::vector<uint32_t>> read_xsave() const;
  Result<void> write_xsave(const KvmCpuState& state);
  // kStateMsrs and IA32_TSC. KVM refuses MSRs the guest's CPUID lacks (TSC_AUX without RDTSCP);
  // such an MSR keeps its value in carried_msrs_.
  Result<void> write_msrs(const KvmCpuState& state);
  void read_msrs(KvmCpuState& state) const;

  UniqueFd fd_;
  RunArea run_area_;
  kvm_run* run_;
  cpu::x86::CpuEnvironment& environment_;
  const uint32_t index_;
  const int kick_signal_;
  size_t xsave_bytes_ = sizeof(XsaveRegion);  // larger with KVM_CAP_XSAVE2 (e.g. AMX state)
  bool xsave2_ = false;
  bool xcrs_ = false;  // KVM_CAP_XCRS

  // Requests from other threads.
  std::atomic<bool> kick_requested_{false};
  std::atomic<bool> attention_{false};  // an interrupt, NMI, INIT or SIPI may be pending
  std::atomic<bool> nmi_requested_{false};
  std::atomic<bool> init_requested_{false};
  std::atomic<int> startup_vector_{-1};
  // Which thread runs the guest, and whether it is inside KVM_RUN (only then is it signalled).
  std::atomic<pthread_t> thread_{};
  std::atomic<bool> in_guest_{false};

  // vCPU-thread state.
  bool halted_ = false;
  bool wait_for_startup_ = false;
  // The run area's if_flag/ready_for_interrupt_injection describe the current state (false
  // after set_state until the next exit).
  bool run_state_current_ = false;
  std::string failure_;  // a set_state() that KVM refused: the next run() stops with it
  // The MSR values of the last state set; KVM keeps those it has (kStateMsrs), the rest are
  // answered from here (the guest cannot change them on KVM: unknown MSRs are #GP).
  cpu::x86::MsrState carried_msrs_ = cpu::x86::msr_power_on_state(false);
};

}  // namespace lamina::accel::kvm
