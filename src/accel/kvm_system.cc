#include "accel/kvm_system.h"

#include "accel/kvm_abi.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace lamina::accel::kvm {
namespace {

// Below 4 GiB, clear of RAM, the PCI windows, IOAPIC, HPET, LAPIC and the firmware ROM: the three
// pages of the real-mode TSS and the identity-map page KVM's Intel backend needs when the CPU
// lacks unrestricted guest support (api.rst 4.48 KVM_SET_TSS_ADDR, 4.47 KVM_SET_IDENTITY_MAP_ADDR).
constexpr uint64_t kIdentityMapAddress = 0xfeffc000;
constexpr uint64_t kTssAddress = 0xfeffd000;

struct RequiredCapability {
  long extension;
  const char* name;
};
// KVM_CAP_USER_MEMORY: RAM from our mappings; IMMEDIATE_EXIT: kicks that cannot be lost;
// X86_USER_SPACE_MSR + X86_MSR_FILTER: the APIC's MSRs reach our LAPIC (Linux 5.10).
constexpr RequiredCapability kRequired[] = {
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
    {KVM_CAP_X86_USER_SPACE_MSR, "KVM_CAP_X86_USER_SPACE_MSR"},
    {KVM_CAP_X86_MSR_FILTER, "KVM_CAP_X86_MSR_FILTER"},
};

Error unavailable(std::string message) {
  return Error(ErrorCode::kUnsupported, std::move(message));
}

}  // namespace

Result<int> checked_ioctl(int fd, unsigned long request, unsigned long argument,
                          std::string_view what) {
  for (;;) {
    const int result = ::ioctl(fd, request, argument);
    if (result >= 0) return result;
    if (errno == EINTR) continue;
    return fail(ErrorCode::kIo, fmt::format("{}: {}", what, std::strerror(errno)));
  }
}

std::string_view kvm_device_path() {
  const char* path = std::getenv("LAMINA_KVM_DEVICE");
  return path != nullptr && *path != '\0' ? path : "/dev/kvm";
}

bool host_kvm_is_software_pvm() {
  std::error_code error;
  const auto loaded = [&](const char* module) {
    return std::filesystem::exists(std::filesystem::path("/sys/module") / module, error);
  };
  return loaded("kvm_pvm") && !loaded("kvm_intel") && !loaded("kvm_amd");
}

Result<KvmSystem> KvmSystem::open(int open_device) {
  const std::string path(kvm_device_path());
  UniqueFd device(open_device >= 0 ? ::fcntl(open_device, F_DUPFD_CLOEXEC, 0)
                                   : ::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!device.valid() && open_device >= 0) {
    return fail(ErrorCode::kIo,
                fmt::format("duplicating the open KVM device: {}", std::strerror(errno)));
  }
  if (!device.valid()) {
    const int error = errno;
    if (error == ENOENT || error == ENXIO || error == ENODEV) {
      return std::unexpected(unavailable(fmt::format(
          "{} does not exist: this host offers no hardware virtualization to Lamina (load "
          "kvm_intel or kvm_amd, or use --accel emu)",
          path)));
    }
    if (error == EACCES || error == EPERM) {
      return std::unexpected(unavailable(fmt::format(
          "no permission to open {} (join the 'kvm' group, or use --accel emu)", path)));
    }
    return std::unexpected(unavailable(
        fmt::format("cannot open {}: {} (use --accel emu)", path, std::strerror(error))));
  }
  const int version = ::ioctl(device.get(), KVM_GET_API_VERSION, 0);
  if (version < 0) {
    return std::unexpected(unavailable(
        fmt::format("{} is not a KVM device ({}; use --accel emu)", path, std::strerror(errno))));
  }
  if (version != kApiVersion) {
    return std::unexpected(
        unavailable(fmt::format("{} speaks KVM API version {}, Lamina needs {} (use --accel emu)",
                                path, version, kApiVersion)));
  }
  for (const RequiredCapability& required : kRequired) {
    if (::ioctl(device.get(), KVM_CHECK_EXTENSION, required.extension) <= 0) {
      return std::unexpected(unavailable(
          fmt::format("the host's KVM lacks {} (Linux 5.10 or newer is needed; use --accel emu)",
                      required.name)));
    }
  }
  const int run_size = ::ioctl(device.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size < static_cast<int>(sizeof(kvm_run))) {
    return std::unexpected(
        unavailable(fmt::format("{}: bad vCPU run-area size {}", path, run_size)));
  }
  return KvmSystem(std::move(device), static_cast<size_t>(run_size));
}

int KvmSystem::capability(long extension) const {
  const int result = ::ioctl(device_.get(), KVM_CHECK_EXTENSION, extension);
  return result < 0 ? 0 : result;
}

int KvmSystem::max_vcpus() const {
  // api.rst 4.7: KVM_CAP_MAX_VCPUS, else KVM_CAP_NR_VCPUS, else 4.
  if (int max = capability(KVM_CAP_MAX_VCPUS); max > 0) return max;
  if (int recommended = capability(KVM_CAP_NR_VCPUS); recommended > 0) return recommended;
  return 4;
}

Result<std::vector<kvm_cpuid_entry2>> KvmSystem::supported_cpuid() const {
  return read_cpuid_list(device_.get(), kGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID");
}

Result<std::vector<kvm_cpuid_entry2>> KvmSystem::read_cpuid_list(int fd, unsigned long request,
                                                                 std::string_view what) {
  for (uint32_t entries = 64; entries <= 4096; entries *= 2) {
    FlexibleList<kvm_cpuid_entry2> list(entries);
    if (::ioctl(fd, request, list.data()) == 0) {
      std::vector<kvm_cpuid_entry2> result;
      const size_t count = std::min<size_t>(list.count(), list.capacity());
      for (size_t index = 0; index < count; ++index) result.push_back(list.get(index));
      return result;
    }
    if (errno != E2BIG) return fail(ErrorCode::kIo, fmt::format("{}: {}", what, std::strerror(errno)));
  }
  return fail(ErrorCode::kIo, fmt::format("{}: more than 4096 entries", what));
}

Result<KvmVm> KvmVm::create(const KvmSystem& system, GuestMemory& memory) {
  int vm_fd = -1;
  for (;;) {
    // KVM_CREATE_VM may fail with EINTR while the kernel sets up (api.rst 4.2).
    vm_fd = ::ioctl(system.fd(), KVM_CREATE_VM, 0);
    if (vm_fd >= 0 || errno != EINTR) break;
  }
  if (vm_fd < 0)
    return fail(ErrorCode::kIo, fmt::format("KVM_CREATE_VM: {}", std::strerror(errno)));
  KvmVm vm{UniqueFd(vm_fd)};

  // Slot i is regions()[i]: KvmDirtyLog (kvm_dirty_log.h) addresses the slots so.
  uint32_t slot = 0;
  for (const RamRegion& region : memory.regions()) {
    std::byte* host = memory.host_pointer(region.guest_physical, region.size);
    if (host == nullptr) return fail(ErrorCode::kInternal, "guest RAM region without a mapping");
    // Transparent huge pages let KVM map guest RAM with large pages (fewer TLB misses and
    // faults); advisory, so a refusal changes nothing.
    ::madvise(host, region.size, MADV_HUGEPAGE);
    kvm_userspace_memory_region slot_region{};
    slot_region.slot = slot++;
    slot_region.guest_phys_addr = region.guest_physical;
    slot_region.memory_size = region.size;
    slot_region.userspace_addr = reinterpret_cast<uint64_t>(host);
    if (auto set = checked_ioctl(
            vm.fd(), KVM_SET_USER_MEMORY_REGION, &slot_region,
            fmt::format("KVM_SET_USER_MEMORY_REGION at {:#x}", region.guest_physical));
        !set) {
      return fail(set.error());
    }
  }

  if (system.capability(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0) {
    const uint64_t address = kIdentityMapAddress;
    if (auto set = checked_ioctl(vm.fd(), KVM_SET_IDENTITY_MAP_ADDR, &address,
                                 "KVM_SET_IDENTITY_MAP_ADDR");
        !set) {
      return fail(set.error());
    }
  }
  if (auto set = checked_ioctl(vm.fd(), KVM_SET_TSS_ADDR, kTssAddress, "KVM_SET_TSS_ADDR"); !set) {
    return fail(set.error());
  }

  // MSR accesses KVM refuses (#GP) or that the filter denies exit to user space, where the
  // CpuEnvironment's platform MSRs answer (api.rst 7.21 KVM_CAP_X86_USER_SPACE_MSR).
  kvm_enable_cap user_space_msr{};
  user_space_msr.cap = KVM_CAP_X86_USER_SPACE_MSR;
  user_space_msr.args[0] =
      KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN | KVM_MSR_EXIT_REASON_FILTER;
  if (auto enabled =
          checked_ioctl(vm.fd(), KVM_ENABLE_CAP, &user_space_msr, "KVM_CAP_X86_USER_SPACE_MSR");
      !enabled) {
    return fail(enabled.error());
  }
  // One range per MSR, bitmap bit 0 clear: denied for reads and writes (api.rst 4.126).
  kvm_msr_filter filter{};
  filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
  std::array<uint8_t, std::size(kFilteredMsrs)> deny{};
  for (size_t index = 0; index < std::size(kFilteredMsrs); ++index) {
    kvm_msr_filter_range& range = filter.ranges[index];
    range.flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
    range.nmsrs = 1;
    range.base = kFilteredMsrs[index];
    range.bitmap = &deny[index];
  }
  if (auto set = checked_ioctl(vm.fd(), KVM_X86_SET_MSR_FILTER, &filter, "KVM_X86_SET_MSR_FILTER");
      !set) {
    return fail(set.error());
  }
  return vm;
}

}  // namespace lamina::accel::kvm
