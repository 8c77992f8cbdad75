#include "accel/kvm_dirty_log.h"

#include <linux/kvm.h>

#include <bit>

#include <fmt/format.h>

#include "accel/kvm_system.h"

namespace lamina::accel::kvm {

Result<void> KvmDirtyLog::set_logging(bool on) {
  uint32_t slot = 0;
  for (const RamRegion& region : memory_.regions()) {
    std::byte* host = memory_.host_pointer(region.guest_physical, region.size);
    if (host == nullptr) return fail(ErrorCode::kInternal, "guest RAM region without a mapping");
    // The same slot with only its flags changed (api.rst 4.35: a slot's flags may change).
    kvm_userspace_memory_region slot_region{};
    slot_region.slot = slot++;
    slot_region.flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0;
    slot_region.guest_phys_addr = region.guest_physical;
    slot_region.memory_size = region.size;
    slot_region.userspace_addr = reinterpret_cast<uint64_t>(host);
    if (auto set = checked_ioctl(
            vm_fd_, KVM_SET_USER_MEMORY_REGION, &slot_region,
            fmt::format("dirty logging {} for the RAM slot at {:#x}", on ? "on" : "off",
                        region.guest_physical));
        !set) {
      return fail(set.error());
    }
  }
  return {};
}

Result<void> KvmDirtyLog::start() {
  if (auto set = set_logging(true); !set) {
    (void)set_logging(false);
    return set;
  }
  logging_ = true;
  return {};
}

void KvmDirtyLog::stop() {
  if (!logging_) return;
  logging_ = false;
  (void)set_logging(false);
}

Result<void> KvmDirtyLog::collect() {
  if (!logging_) return {};
  uint32_t slot = 0;
  for (const RamRegion& region : memory_.regions()) {
    const uint64_t pages = region.size / DirtyLog::kPageSize;
    // One bit per page, in 64-bit words (api.rst 4.8: the bitmap is long-aligned).
    std::vector<uint64_t> bitmap((pages + 63) / 64);
    kvm_dirty_log request{};
    request.slot = slot++;
    request.dirty_bitmap = bitmap.data();
    if (auto got = checked_ioctl(vm_fd_, KVM_GET_DIRTY_LOG, &request,
                                 fmt::format("KVM_GET_DIRTY_LOG for the RAM slot at {:#x}",
                                             region.guest_physical));
        !got) {
      return fail(got.error());
    }
    mark_bitmap(bitmap, region.guest_physical, pages, memory_.dirty_log());
  }
  return {};
}

void KvmDirtyLog::mark_bitmap(const std::vector<uint64_t>& bitmap, uint64_t guest_physical,
                              uint64_t pages, DirtyLog& log) {
  for (size_t word = 0; word < bitmap.size(); ++word) {
    for (uint64_t bits = bitmap[word]; bits != 0; bits &= bits - 1) {
      const uint64_t page = word * 64 + static_cast<uint64_t>(std::countr_zero(bits));
      if (page >= pages) break;
      log.mark(guest_physical + page * DirtyLog::kPageSize, DirtyLog::kPageSize);
    }
  }
}

}  // namespace lamina::accel::kvm
