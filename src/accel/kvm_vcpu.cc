#include "accel/kvm_vcpu.h"

#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "accel/kvm_abi.h"
#include "accel/kvm_kick.h"
#include "accel/kvm_state.h"
#include "base/byte_order.h"
#include "base/log.h"

namespace lamina::accel::kvm {
namespace {

constexpr uint32_t kMsrApicBase = 0x1b;
// IA32_APIC_BASE after reset for a bootstrap processor: enabled at 0xfee00000, BSP flag.
constexpr uint64_t kDefaultApicBase = 0xfee00900;

}  // namespace

Result<RunArea> RunArea::map(int vcpu_fd, size_t size) {
  void* area = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
  if (area == MAP_FAILED) {
    return fail(ErrorCode::kIo, fmt::format("mapping the vCPU run area: {}", std::strerror(errno)));
  }
  return RunArea(static_cast<kvm_run*>(area), size);
}

RunArea::RunArea(RunArea&& other) noexcept : run_(other.run_), size_(other.size_) {
  other.run_ = nullptr;
}

RunArea::~RunArea() {
  if (run_ != nullptr) ::munmap(run_, size_);
}

Result<std::vector<kvm_cpuid_entry2>> KvmVcpu::applied_cpuid() const {
  return KvmSystem::read_cpuid_list(fd_.get(), kGetCpuid2, "KVM_GET_CPUID2");
}

Result<std::unique_ptr<KvmVcpu>> KvmVcpu::create(const KvmSystem& system, const KvmVm& vm,
                                                 uint32_t index,
                                                 cpu::x86::CpuEnvironment& environment,
                                                 std::span<const kvm_cpuid_entry2> cpuid,
                                                 int kick_signal) {
  auto created = checked_ioctl(vm.fd(), KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU");
  if (!created) return fail(created.error());
  UniqueFd fd(*created);
  auto run = RunArea::map(fd.get(), system.vcpu_run_size());
  if (!run) return fail(run.error());

  FlexibleList<kvm_cpuid_entry2> table(cpuid);
  if (auto set = checked_ioctl(fd.get(), kSetCpuid2, table.data(), "KVM_SET_CPUID2"); !set) {
    return fail(set.error());
  }
  std::unique_ptr<KvmVcpu> vcpu(
      new KvmVcpu(std::move(fd), std::move(*run), environment, index, kick_signal));
  vcpu->xcrs_ = system.capability(KVM_CAP_XCRS) > 0;
  if (const int xsave2 = system.capability(KVM_CAP_XSAVE2); xsave2 > 0) {
    vcpu->xsave2_ = true;
    vcpu->xsave_bytes_ = std::max(vcpu->xsave_bytes_, static_cast<size_t>(xsave2));
  }
  // IA32_APIC_BASE is the LAPIC's; KVM keeps a copy for CPUID.1:EDX.APIC (api.rst 4.14).
  auto state = vcpu->read_state();
  if (!state) return fail(state.error());
  // Application processors wait for INIT-SIPI-SIPI (MP spec B.4).
  state->waiting_for_startup = index != 0;
  if (auto written = vcpu->write_state(*state); !written) return fail(written.error());
  return vcpu;
}

Result<void> KvmVcpu::setup_machine_check(const KvmSystem& system, uint8_t banks) {
  // KVM_CAP_MCE answers the most banks KVM emulates; KVM_X86_GET_MCE_CAP_SUPPORTED the
  // MCG_CAP bits it can offer (api.rst, KVM_X86_SETUP_MCE).
  const int most_banks = system.capability(KVM_CAP_MCE);
  if (most_banks <= 0 || banks == 0) return {};
  uint64_t supported = 0;
  if (auto got = checked_ioctl(system.fd(), KVM_X86_GET_MCE_CAP_SUPPORTED, &supported,
                               "KVM_X86_GET_MCE_CAP_SUPPORTED");
      !got) {
    return fail(got.error());
  }
  // MCG_CAP (SDM 15.3.1.1): the bank count in 7:0, MCG_CTL_P in bit 8.
  constexpr uint64_t kMcgCtlPresent = uint64_t{1} << 8;
  uint64_t capabilities =
      std::min<uint64_t>(banks, static_cast<uint64_t>(most_banks)) | (supported & kMcgCtlPresent);
  if (auto set = checked_ioctl(fd_.get(), KVM_X86_SETUP_MCE, &capabilities, "KVM_X86_SETUP_MCE"); !set) {
    return fail(set.error());
  }
  return {};
}

KvmVcpu::KvmVcpu(UniqueFd fd, RunArea run, cpu::x86::CpuEnvironment& environment,
                 uint32_t index, int kick_signal)
    : fd_(std::move(fd)),
      run_area_(std::move(run)),
      run_(run_area_.get()),
      environment_(environment),
      index_(index),
      kick_signal_(kick_signal) {}

void KvmVcpu::interrupt_guest(std::atomic<bool>& flag) {
  // Order matters (see clear_immediate_exit): the flag first, then immediate_exit, then the
  // signal to a thread inside KVM_RUN.
  flag.store(true);
  std::atomic_ref<uint8_t>(run_->immediate_exit).store(1);
  if (in_guest_.load()) pthread_kill(thread_.load(), kick_signal_);
}

void KvmVcpu::clear_immediate_exit() {
  // Cleared before the flags are read: a request made after the read finds immediate_exit
  // set again, so KVM_RUN returns at once instead of running on.
  std::atomic_ref<uint8_t>(run_->immediate_exit).store(0);
}

void KvmVcpu::kick() { interrupt_guest(kick_requested_); }
void KvmVcpu::request_interrupt() { interrupt_guest(attention_); }
void KvmVcpu::request_nmi() {
  nmi_requested_.store(true);
  interrupt_guest(attention_);
}
void KvmVcpu::request_init() {
  init_requested_.store(true);
  interrupt_guest(attention_);
}
void KvmVcpu::startup(uint8_t vector) {
  startup_vector_.store(vector);
  interrupt_guest(attention_);
}

VcpuExit KvmVcpu::internal_error() const {
  // Suberror 1 is an instruction KVM's emulator cannot handle (api.rst 5, KVM_EXIT_INTERNAL_ERROR);
  // the guest's RIP makes the report actionable.
  const auto state = read_state();
  const std::string where =
      state ? fmt::format(" at {:#x}:{:#x} (CR0 {:#x})", state->segment[cpu::x86::kCs].selector,
                          state->rip, state->cr0)
            : std::string();
  const char* what = run_->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                         ? "an instruction KVM cannot emulate"
                         : "KVM internal error";
  return shutdown(fmt::format("{} (suberror {}){}", what, run_->internal.suberror, where));
}

VcpuExit KvmVcpu::shutdown(std::string reason) const {
  VcpuExit exit;
  exit.kind = VcpuExit::Kind::kShutdown;
  exit.reason = std::move(reason);
  return exit;
}

void KvmVcpu::enter_wait_for_startup() {
  cpu::x86::CpuState state;
  // Reset/INIT: CS = F000h with base FFFF0000h, RIP = FFF0h; the rest as CpuState's defaults.
  state.segment[cpu::x86::kCs] = cpu::x86::SegmentCache{0xf000, 0xffff0000, 0xffff, 0x9b};
  if (auto written = write_state(state, StateScope::kRegisters); !written) {
    failure_ = written.error().message();
  }
  wait_for_startup_ = true;
  halted_ = false;
}

void KvmVcpu::start_at(uint8_t vector) {
  // SIPI: CS selector = vector << 8, base = vector << 12, IP = 0 (MP spec B.4.2).
  cpu::x86::CpuState state;
  state.segment[cpu::x86::kCs] = cpu::x86::SegmentCache{static_cast<uint16_t>(vector << 8),
                                                        uint64_t{vector} << 12, 0xffff, 0x9b};
  state.rip = 0;
  if (auto written = write_state(state, StateScope::kRegisters); !written) {
    failure_ = written.error().message();
  }
  wait_for_startup_ = false;
  halted_ = false;
}

bool KvmVcpu::deliver_pending_events() {
  bool nmi = false;
  if (nmi_requested_.exchange(false) && environment_.take_nmi()) {
    // KVM_NMI queues the NMI; KVM delivers it when NMIs are not blocked (api.rst 4.86).
    if (auto injected = checked_ioctl(fd_.get(), KVM_NMI, 0ul, "KVM_NMI"); !injected) {
      failure_ = injected.error().message();
    }
    nmi = true;
  }
  const bool interrupt = environment_.interrupt_pending();
  if (halted_) {
    // HLT ends with an NMI or an interrupt the guest can take (SDM Vol. 2A HLT).
    if (!nmi && !(interrupt && (!run_state_current_ || run_->if_flag))) return false;
    halted_ = false;
  }
  if (interrupt && run_state_current_ && run_->ready_for_interrupt_injection) {
    kvm_interrupt request{};
    request.irq = environment_.acknowledge_interrupt();
    if (auto injected = checked_ioctl(fd_.get(), KVM_INTERRUPT, &request, "KVM_INTERRUPT");
        !injected) {
      failure_ = injected.error().message();
    }
    run_->request_interrupt_window = 0;
  } else {
    // Exit as soon as the guest can take an interrupt (RFLAGS.IF set, no STI/MOV SS shadow).
    run_->request_interrupt_window = interrupt ? 1 : 0;
  }
  return true;
}

VcpuExit KvmVcpu::run(uint64_t) {
  thread_.store(pthread_self());
  const SignalUnblocked unblocked(kick_signal_);
  // Everything a pending request asks for is looked at below.
  attention_.store(false);
  if (init_requested_.exchange(false)) enter_wait_for_startup();
  if (const int vector = startup_vector_.exchange(-1); vector >= 0 && wait_for_startup_) {
    start_at(static_cast<uint8_t>(vector));
  }
  if (wait_for_startup_) {
    VcpuExit exit;
    exit.kind = VcpuExit::Kind::kWaitForStartup;
    return exit;
  }
  VcpuExit yield;
  for (;;) {
    if (!failure_.empty()) return shutdown(failure_);
    if (!deliver_pending_events()) {
      VcpuExit exit;
      exit.kind = VcpuExit::Kind::kHalted;
      return exit;
    }
    clear_immediate_exit();
    if (kick_requested_.exchange(false)) {
      VcpuExit exit;
      exit.kind = VcpuExit::Kind::kKicked;
      return exit;
    }
    // INIT and SIPI reach the vCPU through its thread's loop; give it the chance.
    if (attention_.load()) return yield;

    in_guest_.store(true);
    const int result = ::ioctl(fd_.get(), KVM_RUN, 0);
    const int error = errno;
    in_guest_.store(false);
    run_state_current_ = true;
    if (result < 0) {
      if (error != EINTR && error != EAGAIN)
        return shutdown(fmt::format("KVM_RUN: {}", std::strerror(error)));
      if (kick_requested_.exchange(false)) {
        VcpuExit exit;
        exit.kind = VcpuExit::Kind::kKicked;
        return exit;
      }
      return yield;
    }
    switch (run_->exit_reason) {
      case KVM_EXIT_IO:
        if (!handle_io()) return shutdown("KVM reported port I/O outside its run area");
        break;
      case KVM_EXIT_MMIO: handle_mmio(); break;
      case KVM_EXIT_X86_RDMSR: handle_msr(false); break;
      case KVM_EXIT_X86_WRMSR: handle_msr(true); break;
      case KVM_EXIT_HLT: halted_ = true; break;
      case KVM_EXIT_IRQ_WINDOW_OPEN:
      case KVM_EXIT_INTR:
      // CR8 writes: Lamina's TPR lives in the LAPIC page, as with the built-in CPU.
      case KVM_EXIT_SET_TPR: break;
      case KVM_EXIT_SHUTDOWN: return shutdown("shutdown (triple fault) reported by KVM");
      case KVM_EXIT_FAIL_ENTRY:
        return shutdown(fmt::format("KVM could not enter the guest (hardware reason {:#x})",
                                    run_->fail_entry.hardware_entry_failure_reason));
      case KVM_EXIT_INTERNAL_ERROR: return internal_error();
      default: return shutdown(fmt::format("unexpected KVM exit {}", run_->exit_reason));
    }
  }
}

bool KvmVcpu::handle_io() {
  const auto& io = run_->io;
  const uint64_t bytes = uint64_t{io.size} * io.count;
  if (io.size == 0 || io.size > 4 || io.data_offset > run_area_.size() ||
      bytes > run_area_.size() - io.data_offset) {
    return false;
  }
  auto* data = reinterpret_cast<std::byte*>(run_) + io.data_offset;
  // String I/O (INS/OUTS with REP) arrives as `count` consecutive elements.
  for (uint32_t element = 0; element < io.count; ++element) {
    const std::span<std::byte> value(data + element * io.size, io.size);
    if (io.direction == KVM_EXIT_IO_OUT) {
      environment_.io_write(io.port, io.size, static_cast<uint32_t>(load_le_sized(value)));
    } else {
      store_le_sized(value, environment_.io_read(io.port, io.size));
    }
  }
  return true;
}

void KvmVcpu::handle_mmio() {
  auto& mmio = run_->mmio;
  const uint8_t size = mmio.len == 0 || mmio.len > 8 ? 8 : static_cast<uint8_t>(mmio.len);
  const std::span<std::byte> value(reinterpret_cast<std::byte*>(mmio.data), size);
  if (mmio.is_write) {
    environment_.mmio_write(mmio.phys_addr, size, load_le_sized(value));
  } else {
    store_le_sized(value, environment_.mmio_read(mmio.phys_addr, size));
  }
}

void KvmVcpu::handle_msr(bool write) {
  auto& msr = run_->msr;
  // Anything the platform does not claim is #GP, as KVM would have raised (error = 1).
  msr.error = 1;
  if (!environment_.platform_msr(msr.index)) return;
  if (write) {
    if (!environment_.write_platform_msr(msr.index, msr.data)) return;
    msr.error = 0;
    if (msr.index == kMsrApicBase) {
      // Keep KVM's copy in step: it drives CPUID.1:EDX.APIC. A host-side write passes the
      // filter, which applies to the guest's accesses only (api.rst 4.126).
      FlexibleList<kvm_msr_entry> update(1);
      kvm_msr_entry entry{};
      entry.index = kMsrApicBase;
      entry.data = msr.data;
      update.set(0, entry);
      (void)checked_ioctl(fd_.get(), kSetMsrs, update.data(), "KVM_SET_MSRS");
    }
  } else if (auto value = environment_.read_platform_msr(msr.index)) {
    msr.data = *value;
    msr.error = 0;
  }
}

Result<void> KvmVcpu::write_state(const cpu::x86::CpuState& state, StateScope scope) {
  const bool whole = scope == StateScope::kWhole;
  KvmCpuState kvm = to_kvm(state, environment_.read_tsc());
  kvm.sregs.apic_base =
      environment_.platform_msr(kMsrApicBase)
          ? environment_.read_platform_msr(kMsrApicBase).value_or(kDefaultApicBase)
          : kDefaultApicBase;
  const int fd = fd_.get();
  if (auto set = checked_ioctl(fd, KVM_SET_SREGS, &kvm.sregs, "KVM_SET_SREGS"); !set)
    return fail(set.error());
  if (auto set = checked_ioctl(fd, KVM_SET_REGS, &kvm.regs, "KVM_SET_REGS"); !set)
    return fail(set.error());
  if (auto set = checked_ioctl(fd, KVM_SET_FPU, &kvm.fpu, "KVM_SET_FPU"); !set)
    return fail(set.error());
  if (auto set = checked_ioctl(fd, KVM_SET_DEBUGREGS, &kvm.debug, "KVM_SET_DEBUGREGS"); !set) {
    return fail(set.error());
  }
  // XCR0 before the XSAVE area: KVM checks the area's components against it.
  if (whole && xcrs_) {
    if (auto set = checked_ioctl(fd, KVM_SET_XCRS, &kvm.xcrs, "KVM_SET_XCRS"); !set) {
      return fail(set.error().with_context(
          fmt::format("XCR0 {:#x} (the guest's CPUID must offer its components)",
                      state.extended_simd.xcr0)));
    }
  }
  if (auto set = write_xsave(kvm); !set) return fail(set.error());
  if (whole) {
    if (auto set = write_msrs(kvm); !set) return fail(set.error());
    carried_msrs_ = state.msr;
    wait_for_startup_ = state.waiting_for_startup;
  }
  if (auto set = checked_ioctl(fd, KVM_SET_VCPU_EVENTS, &kvm.events, "KVM_SET_VCPU_EVENTS");
      !set) {
    return fail(set.error());
  }
  // Without an in-kernel APIC, KVM loads CR8 from the run area on every entry (api.rst 5,
  // "cr8"), and the injection bits there describe the old state until the next exit.
  run_->cr8 = kvm.sregs.cr8;
  run_state_current_ = false;
  halted_ = state.halted;
  return {};
}

Result<void> KvmVcpu::write_msrs(const KvmCpuState& kvm) {
  std::vector<kvm_msr_entry> entries;
  for (size_t i = 0; i < kStateMsrs.size(); ++i) {
    entries.push_back(kvm_msr_entry{kStateMsrs[i], 0, kvm.msrs[i]});
  }
  // The TSC last, so that the value computed from the clock is written soon after.
  entries.push_back(kvm_msr_entry{kMsrTsc, 0, kvm.tsc});
  // KVM_SET_MSRS stops at the first MSR it refuses and answers how many it took; the rest go
  // again without it. An MSR the guest's CPUID lacks (TSC_AUX without RDTSCP) may be refused
  // at its reset value only: any other value would be lost.
  const cpu::x86::MsrState reset = cpu::x86::msr_power_on_state(false);
  for (size_t first = 0; first < entries.size();) {
    const std::span<const kvm_msr_entry> rest(entries.begin() + static_cast<ptrdiff_t>(first),
                                              entries.end());
    FlexibleList<kvm_msr_entry> list(rest);
    auto written = checked_ioctl(fd_.get(), kSetMsrs, list.data(), "KVM_SET_MSRS");
    if (!written) return fail(written.error());
    first += static_cast<size_t>(*written);
    if (first >= entries.size()) break;
    const size_t refused = first;
    if (refused >= kStateMsrs.size() || entries[refused].data != state_msr(reset, refused)) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("KVM refused MSR {:#x} = {:#x} of the vCPU state",
                              entries[refused].index, entries[refused].data));
    }
    ++first;
  }
  return {};
}

void KvmVcpu::read_msrs(KvmCpuState& kvm) const {
  std::vector<kvm_msr_entry> entries;
  for (size_t i = 0; i < kStateMsrs.size(); ++i) {
    entries.push_back(kvm_msr_entry{kStateMsrs[i], 0, state_msr(carried_msrs_, i)});
  }
  entries.push_back(kvm_msr_entry{kMsrTsc, 0, 0});
  // As in write_msrs: KVM_GET_MSRS stops at an MSR it does not have, which keeps the value
  // last set.
  for (size_t first = 0; first < entries.size();) {
    const std::span<const kvm_msr_entry> rest(entries.begin() + static_cast<ptrdiff_t>(first),
                                              entries.end());
    FlexibleList<kvm_msr_entry> list(rest);
    auto read = checked_ioctl(fd_.get(), kGetMsrs, list.data(), "KVM_GET_MSRS");
    const size_t count = read ? static_cast<size_t>(*read) : 0;
    for (size_t i = 0; i < count && i < rest.size(); ++i) entries[first + i] = list.get(i);
    first += count + 1;
  }
  for (size_t i = 0; i < kStateMsrs.size(); ++i) kvm.msrs[i] = entries[i].data;
  kvm.tsc = entries.back().data;
}

Result<cpu::x86::CpuState> KvmVcpu::read_state() const {
  KvmCpuState kvm;
  const int fd = fd_.get();
  if (auto got = checked_ioctl(fd, KVM_GET_REGS, &kvm.regs, "KVM_GET_REGS"); !got)
    return fail(got.error());
  if (auto got = checked_ioctl(fd, KVM_GET_SREGS, &kvm.sregs, "KVM_GET_SREGS"); !got)
    return fail(got.error());
  if (auto got = checked_ioctl(fd, KVM_GET_FPU, &kvm.fpu, "KVM_GET_FPU"); !got)
    return fail(got.error());
  if (auto got = checked_ioctl(fd, KVM_GET_DEBUGREGS, &kvm.debug, "KVM_GET_DEBUGREGS"); !got) {
    return fail(got.error());
  }
  auto xsave = read_xsave();
  if (!xsave) return fail(xsave.error());
  load_xsave(std::as_bytes(std::span(*xsave)), kvm);
  if (xcrs_) {
    if (auto got = checked_ioctl(fd, KVM_GET_XCRS, &kvm.xcrs, "KVM_GET_XCRS"); !got)
      return fail(got.error());
  } else {
    kvm.xcrs.nr_xcrs = 1;
    kvm.xcrs.xcrs[0] = {0, 0, 1};
  }
  if (auto got = checked_ioctl(fd, KVM_GET_VCPU_EVENTS, &kvm.events, "KVM_GET_VCPU_EVENTS");
      !got) {
    return fail(got.error());
  }
  read_msrs(kvm);
  // The clock right after the TSC, so the offset between them is the guest's.
  const uint64_t tsc_base = environment_.read_tsc();
  cpu::x86::MsrState other = carried_msrs_;
  if (environment_.platform_msr(kMsrApicBase)) {
    other.apic_base = environment_.read_platform_msr(kMsrApicBase).value_or(other.apic_base);
  }
  cpu::x86::CpuState state = from_kvm(kvm, tsc_base, other);
  state.halted = halted_;
  state.waiting_for_startup = wait_for_startup_;
  return state;
}

Result<std::vector<uint32_t>> KvmVcpu::read_xsave() const {
  std::vector<uint32_t> area(xsave_bytes_ / sizeof(uint32_t));
  auto got =
      checked_ioctl(fd_.get(), xsave2_ ? kGetXsave2 : kGetXsave, area.data(), "KVM_GET_XSAVE");
  if (!got) return fail(got.error());
  return area;
}

Result<void> KvmVcpu::write_xsave(const KvmCpuState& kvm) {
  auto area = read_xsave();
  if (!area) return fail(area.error());
  store_xsave(kvm, std::as_writable_bytes(std::span(*area)));
  auto set = checked_ioctl(fd_.get(), kSetXsave, area->data(), "KVM_SET_XSAVE");
  if (!set) return fail(set.error());
  return {};
}

cpu::x86::CpuState KvmVcpu::state() const {
  auto state = read_state();
  if (!state) {
    log_warn("kvm vCPU {}: reading the state failed: {}", index_, state.error().message());
    return cpu::x86::CpuState{};
  }
  return *state;
}

void KvmVcpu::restore_state(const cpu::x86::CpuState& state) {
  // INIT and SIPI requests still queued (an application processor is created with one
  // pending in effect) belong to the machine before the restore.
  init_requested_.store(false);
  startup_vector_.store(-1);
  set_state(state);
}

void KvmVcpu::set_state(const cpu::x86::CpuState& state) {
  if (auto written = write_state(state); !written) {
    failure_ = fmt::format("setting the vCPU {} state: {}", index_, written.error().message());
  }
}

}  // namespace lamina::accel::kvm
