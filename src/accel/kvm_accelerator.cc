// The `kvm` accelerator: guest code runs on the host CPU through /dev/kvm; Lamina's devices,
// including every interrupt controller, stay in user space (kvm_vcpu.h).
#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "accel/accelerator.h"
#include "accel/kvm_cpuid.h"
#include "accel/kvm_dirty_log.h"
#include "accel/kvm_kick.h"
#include "accel/kvm_system.h"
#include "accel/kvm_vcpu.h"

namespace lamina::accel {
namespace {

using kvm::KickSignal;
using kvm::KvmSystem;
using kvm::KvmVm;

class KvmAccelerator : public Accelerator {
 public:
  KvmAccelerator(KvmSystem system, KvmVm vm, KickSignal kick, cpu::x86::CpuFeatures features,
                 std::vector<kvm_cpuid_entry2> supported, GuestMemory& memory)
      : system_(std::move(system)),
        vm_(std::move(vm)),
        kick_(std::move(kick)),
        features_(std::move(features)),
        supported_(std::move(supported)),
        dirty_log_(vm_.fd(), memory) {}

  std::string_view name() const override { return "kvm"; }

  Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index,
                                            cpu::x86::CpuEnvironment& environment) override {
    if (index >= features_.vcpu_count) {
      return fail(ErrorCode::kInvalidArgument, "vCPU index beyond the CPU model's vcpu_count");
    }
    // The guest's TSC runs at the rate KVM gives this vCPU (the host's, without TSC scaling);
    // the hypervisor timing leaf reports it.
    uint32_t tsc_khz = features_.tsc_khz;
    auto vcpu = kvm::KvmVcpu::create(
        system_, vm_, index, environment,
        kvm::guest_cpuid(supported_, features_, index, host_tsc_khz().value_or(tsc_khz)),
        kick_.number());
    if (!vcpu) return fail(vcpu.error().with_context("kvm"));
    if (features_.mca) {
      if (auto set = (*vcpu)->setup_machine_check(system_, features_.machine_check_banks); !set) {
        return fail(set.error().with_context("kvm"));
      }
    }
    return std::unique_ptr<Vcpu>(std::move(*vcpu));
  }

  // The hardware reads guest RAM directly; nothing caches decoded code.
  void guest_memory_written(uint64_t, uint64_t) override {}

  Result<void> start_dirty_logging() override { return dirty_log_.start(); }
  void stop_dirty_logging() override { dirty_log_.stop(); }
  Result<void> collect_dirty_pages() override { return dirty_log_.collect(); }

 private:
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
  std::vector<kvm_cpuid_entry2> supported_;
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
                                                            int open_device) {
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
  cpu::x86::CpuFeatures model = features;
  model.tsc_deadline = false;
  return std::unique_ptr<Accelerator>(
      std::make_unique<KvmAccelerator>(std::move(*system), std::move(*vm), std::move(*kick),
                                       std::move(model), std::move(*supported), memory));
}

}  // namespace lamina::accel
