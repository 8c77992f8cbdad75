#pragma once
// KvmDirtyLog: KVM's dirty-page logging of guest RAM for live migration. A vCPU run by KVM
// stores to guest RAM without Lamina seeing it, so KVM logs the pages instead: start() sets
// KVM_MEM_LOG_DIRTY_PAGES on every RAM slot (KVM write-protects the slot's pages and notes the
// first write to each), collect() fetches and clears each slot's bitmap (KVM_GET_DIRTY_LOG,
// which write-protects the pages again) and marks those pages in GuestMemory's DirtyLog, the one
// log migration reads; stop() clears the flag. Linux Documentation/virt/kvm/api.rst 4.8
// (KVM_GET_DIRTY_LOG) and 4.35 (KVM_SET_USER_MEMORY_REGION, its flags).
//
// The slots are GuestMemory's regions in order, slot i for regions()[i], as KvmVm::create
// made them.
//
// Ownership: borrows the VM's descriptor and guest memory (both must outlive it).
// Thread-safety: start(), stop() and collect() from one controlling thread (the migration's),
// with the vCPUs held for collect() so its pages land in the bitmap taken right after.

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"

namespace lamina::accel::kvm {

class KvmDirtyLog {
 public:
  KvmDirtyLog(int vm_fd, GuestMemory& memory) : vm_fd_(vm_fd), memory_(memory) {}

  [[nodiscard]] Result<void> start();
  void stop();
  // Marks every page KVM logged since start() or the last collect() in memory.dirty_log().
  [[nodiscard]] Result<void> collect();
  bool logging() const { return logging_; }

  // The pages a KVM_GET_DIRTY_LOG bitmap names (bit i of the 64-bit word i / 64: page i of
  // the slot), as guest-physical ranges marked in `log`; exposed for tests.
  static void mark_bitmap(const std::vector<uint64_t>& bitmap, uint64_t guest_physical,
                          uint64_t pages, DirtyLog& log);

 private:
  Result<void> set_logging(bool on);

  int vm_fd_;
  GuestMemory& memory_;
  bool logging_ = false;
};

}  // namespace lamina::accel::kvm
