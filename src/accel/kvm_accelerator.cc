// The `kvm` accelerator: guest code runs on the host CPU through /dev/kvm; Lamina's devices,
// including every interrupt controller, stay in user space (kvm_vcpu.h).
#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "accel/accelerator.h"
#include "accel/kvm_cpuid.h"
#include "accel/kvm_dirty_log.h"
#include "accel/kvm_kick.h"
#include "accel/kvm_system.h"
#include "accel/kvm_vcpu.h"
#include "base/log.h"

namespace lamina::accel {
namespace {

using kvm::KickSignal;
using kvm::KvmSystem;
using kvm::KvmVm;

class KvmAccelerator : public Accelerator {
 public:
  // `model` is set with kLamina (the features reduced to what KVM runs here), null with kHost.
  KvmAccelerator(KvmSystem system, KvmVm vm, KickSignal kick, cpu::x86::CpuFeatures features,
                 std::optional<cpu::x86::CpuidModel> model,
                 std::vector<kvm_cpuid_entry2> supported, GuestMemory& memory)
      : system_(std::move(system)),
        vm_(std::move(vm)),
        kick_(std::move(kick)),
        features_(std::move(features)),
        model_(std::move(model)),
        supported_(std::move(supported)),
        dirty_log_(vm_.fd(), memory) {
    presented_.kind = model_ ? CpuModelKind::kLamina : CpuModelKind::kHost;
    presented_.leaves = kvm::to_cpuid_table(cpuid_for(0));
  }

  std::string_view name() const override { return "kvm"; }

  Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index,
                                            cpu::x86::CpuEnvironment& environment) override {
    if (index >= features_.vcpu_count) {
      return fail(ErrorCode::kInvalidArgument, "vCPU index beyond the CPU model's vcpu_count");
    }
    const std::vector<kvm_cpuid_entry2> cpuid = cpuid_for(index);
    auto vcpu = kvm::KvmVcpu::create(system_, vm_, index, environment, cpuid, kick_.number());
    if (!vcpu) return fail(vcpu.error().with_context("kvm"));
    if (index == 0) warn_about_overrides(**vcpu, cpuid);
    if (features_.mca) {
      if (auto set = (*vcpu)->setup_machine_check(system_, features_.machine_check_banks); !set) {
        return fail(set.error().with_context("kvm"));
      }
    }
    return std::unique_ptr<Vcpu>(std::move(*vcpu));
  }

  // The hardware reads guest RAM directly; nothing caches decoded code.
  void guest_memory_written(uint64_t, uint64_t) override {}

  const PresentedCpu& presented_cpu() const override { return presented_; }

  Result<void> start_dirty_logging() override { return dirty_log_.start(); }
  void stop_dirty_logging() override { dirty_log_.stop(); }
  Result<void> collect_dirty_pages() override { return dirty_log_.collect(); }

 private:
  // A KVM that does not apply the feature bits it was given (PVM: the hardware's, in leaves 1
  // and 7) shows the guest features outside the model; a move of this VM to another backend
  // checks the model's bits only (machine state "cpu_model"), so say so once per VM.
  void warn_about_overrides(const kvm::KvmVcpu& vcpu, std::span<const kvm_cpuid_entry2> given) {
    auto applied = vcpu.applied_cpuid();
    if (!applied) return;
    const std::vector<std::string> overrides = kvm::feature_overrides(given, *applied);
    if (overrides.empty()) return;
    log_warn("kvm: this host's KVM shows the guest other CPUID feature bits than the CPU model "
             "({}) gives it ({}); a guest that uses one cannot move to another backend safely",
             cpu_model_name(presented_.kind), fmt::join(overrides, "; "));
  }

  std::vector<kvm_cpuid_entry2> cpuid_for(uint32_t index) const {
    // The guest's TSC runs at the rate KVM gives this vCPU (the host's, without TSC scaling);
    // the hypervisor timing leaf reports it.
    const uint32_t tsc_khz = host_tsc_khz().value_or(features_.tsc_khz);
    if (model_) return kvm::guest_cpuid_from_model(*model_, index, tsc_khz);
    return kvm::guest_cpuid_from_host(supported_, features_, index, tsc_khz);
  }

  std::optional<uint32_t> host_tsc_khz() const {
    // KVM_GET_TSC_KHZ on the VM (Linux 5.17+); older kernels answer only per vCPU.
    const int khz = ::ioctl(vm_.fd(), KVM_GET_TSC_KHZ, 0);
    if (khz > 0) return static_cast<uint32_t>(khz);
    return std::nullopt;
  }

  KvmSystem system_;
  KvmVm vm_;
  KickSignal kick_;
  cpu::x86::CpuFeatures features_;
  std::optional<cpu::x86::CpuidModel> model_;
  std::vector<kvm_cpuid_entry2> supported_;
  PresentedCpu presented_;
  kvm::KvmDirtyLog dirty_log_;
};

}  // namespace

Result<KvmHost> probe_kvm() {
  auto system = KvmSystem::open();
  if (!system) return fail(system.error());
  return KvmHost{kvm::host_kvm_is_software_pvm()};
}

Result<UniqueFd> open_kvm_device() {
  auto system = KvmSystem::open();
  if (!system) return fail(system.error());
  UniqueFd device(::fcntl(system->fd(), F_DUPFD_CLOEXEC, 0));
  if (!device.valid()) {
    return fail(ErrorCode::kIo,
                fmt::format("duplicating {}: {}", kvm::kvm_device_path(), std::strerror(errno)));
  }
  return device;
}

Result<std::unique_ptr<Accelerator>> create_kvm_accelerator(GuestMemory& memory,
                                                            const cpu::x86::CpuFeatures& features,
                                                            int open_device, CpuModelKind kind,
                                                            bool log_dropped_features) {
  auto system = KvmSystem::open(open_device);
  if (!system) return fail(system.error());
  const int max_vcpus = system->max_vcpus();
  if (features.vcpu_count < 1 || features.vcpu_count > 255 ||
      features.vcpu_count > static_cast<uint32_t>(max_vcpus)) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("kvm: {} vCPUs; this host's KVM and xAPIC IDs allow 1 to {}",
                            features.vcpu_count, std::min(max_vcpus, 255)));
  }
  if (features.hypervisor_vendor.size() != 12) {
    return fail(ErrorCode::kInvalidArgument, "kvm: the hypervisor vendor must be 12 characters");
  }
  auto supported = system->supported_cpuid();
  if (!supported) return fail(supported.error().with_context("kvm"));
  auto vm = KvmVm::create(*system, memory);
  if (!vm) return fail(vm.error().with_context("kvm"));
  auto kick = KickSignal::install();
  if (!kick) return fail(kick.error().with_context("kvm"));
  cpu::x86::CpuFeatures effective = features;
  std::optional<cpu::x86::CpuidModel> model;
  if (kind == CpuModelKind::kLamina) {
    auto reduced = cpu::x86::reduce_to_support(features, kvm::kvm_support(*supported));
    if (!reduced) return fail(reduced.error().with_context("kvm: CPU model"));
    if (!reduced->dropped.empty() && log_dropped_features) {
      // Once per VM: the guest never sees these, and a migration here of a guest that did is
      // refused (migration/cpu_model_stream.h).
      log_warn("kvm: this host's KVM cannot run {} of Lamina's CPU model; the guest does not see "
               "them",
               fmt::join(reduced->dropped, ", "));
    }
    effective = reduced->features;
    auto created = cpu::x86::CpuidModel::create(effective);
    if (!created) return fail(created.error().with_context("kvm: CPU model"));
    model = std::move(*created);
  }
  effective.tsc_deadline = false;
  return std::unique_ptr<Accelerator>(std::make_unique<KvmAccelerator>(
      std::move(*system), std::move(*vm), std::move(*kick), std::move(effective), std::move(model),
      std::move(*supported), memory));
}

Result<cpu::x86::CpuidSupport> kvm_cpuid_support(int open_device) {
  auto system = KvmSystem::open(open_device);
  if (!system) return fail(system.error());
  auto supported = system->supported_cpuid();
  if (!supported) return fail(supported.error().with_context("kvm"));
  return kvm::kvm_support(*supported);
}

}  // namespace lamina::accel
