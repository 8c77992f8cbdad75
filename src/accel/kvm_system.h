#pragma once
// KvmSystem: the host's KVM device (/dev/kvm) and one VM made on it, as RAII file descriptors
// with checked ioctls. It answers the questions the rest of the backend asks the kernel (API
// version, capabilities, the vCPU run-area size, the CPUID KVM can virtualize) and makes the VM
// the way Lamina runs it: guest RAM as memory slots, no in-kernel interrupt controllers (the
// LAPICs, IOAPIC and 8259s stay Lamina's user-space devices), and the local APIC's MSRs
// (IA32_APIC_BASE, IA32_TSC_DEADLINE) routed to user space through an MSR filter.
// Linux Documentation/virt/kvm/api.rst is the reference for every ioctl here.
//
// Ownership: owns its descriptors (closed on destruction). Thread-safety: the VM's ioctls used
// here may be called from any thread; memory slots are set once before vCPUs run.

#include <linux/kvm.h>

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"
#include "base/unique_fd.h"

namespace lamina::accel::kvm {

// ioctl(2) retried on EINTR; a failure is kIo naming `what` and the errno text.
Result<int> checked_ioctl(int fd, unsigned long request, unsigned long argument,
                          std::string_view what);
inline Result<int> checked_ioctl(int fd, unsigned long request, const void* argument,
                                 std::string_view what) {
  return checked_ioctl(fd, request, reinterpret_cast<unsigned long>(argument), what);
}

// The device path Lamina opens; LAMINA_KVM_DEVICE overrides it (tests point it at a missing file
// to check the "not available" path on hosts that have KVM).
std::string_view kvm_device_path();

// True when the host's KVM is the PVM flavour without a hardware backend (see KvmHost in
// accelerator.h): the kvm_pvm module is loaded and neither kvm_intel nor kvm_amd is.
bool host_kvm_is_software_pvm();

class KvmSystem {
 public:
  // The API version every KVM since Linux 2.6.22 reports (api.rst 4.1).
  static constexpr int kApiVersion = 12;

  // Opens the device and checks the API version and the capabilities Lamina needs. kUnsupported
  // with an actionable message when KVM is missing, not permitted, or too old. With
  // `open_device` (an fd of the device a caller opened earlier, borrowed), a duplicate of it is
  // checked instead: a process inside a sandbox that cannot open files (the worker) makes its
  // VMs that way.
  static Result<KvmSystem> open(int open_device = -1);

  int fd() const { return device_.get(); }
  // KVM_CHECK_EXTENSION on the device (0 when absent).
  int capability(long extension) const;
  size_t vcpu_run_size() const { return vcpu_run_size_; }
  // The CPUID entries KVM can virtualize on this host (KVM_GET_SUPPORTED_CPUID).
  Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  // A CPUID list ioctl (`request` on `fd`: KVM_GET_SUPPORTED_CPUID on the device,
  // KVM_GET_CPUID2 on a vCPU), its buffer grown while the kernel answers E2BIG (api.rst 4.46,
  // 4.48); `what` names the ioctl in errors.
  static Result<std::vector<kvm_cpuid_entry2>> read_cpuid_list(int fd, unsigned long request,
                                                               std::string_view what);
  // Upper bound on vCPUs per VM.
  int max_vcpus() const;

 private:
  explicit KvmSystem(UniqueFd device, size_t run_size)
      : device_(std::move(device)), vcpu_run_size_(run_size) {}

  UniqueFd device_;
  size_t vcpu_run_size_;
};

// One KVM virtual machine with Lamina's RAM in its memory slots.
class KvmVm {
 public:
  // Creates the VM, maps every RAM region of `memory` as a slot, places the TSS/identity-map
  // pages the Intel backend needs for real mode where no device lives, enables user-space MSR
  // exits and installs the filter for the local APIC's MSRs.
  static Result<KvmVm> create(const KvmSystem& system, GuestMemory& memory);

  int fd() const { return vm_.get(); }

 private:
  explicit KvmVm(UniqueFd vm) : vm_(std::move(vm)) {}

  UniqueFd vm_;
};

// The MSRs KVM hands to user space (to the CpuEnvironment's platform MSRs): IA32_APIC_BASE
// and IA32_TSC_DEADLINE. The x2APIC range 0x800-0x8ff cannot be filtered (KVM always allows
// it); without an in-kernel APIC those accesses fail in KVM and reach user space as
// KVM_MSR_EXIT_REASON_INVAL exits.
inline constexpr uint32_t kFilteredMsrs[] = {0x1b, 0x6e0};

}  // namespace lamina::accel::kvm
