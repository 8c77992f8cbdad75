#pragma once
// SharedCodePages: which guest-physical pages hold code translated by any vCPU of a VM, and a
// write generation per page, so that a store by one vCPU invalidates the blocks of every other
// (cross-modifying code, e.g. Linux text_poke on an SMP guest).
//
// Protocol: a vCPU that translates code on a page marks it (mark_code returns the page's
// generation, kept in the block). A store that reaches a marked page through the slow path
// bumps the generation and clears the mark; every vCPU compares its block's generation on block
// entry and retranslates on a mismatch. Once the store has landed, a page marked again in
// between (another vCPU retranslated it from the bytes before the store) is bumped again
// (CpuCore::note_store_landed), so no translation of the old bytes outlives the store. When a page becomes marked, the other vCPUs are asked
// (request::kFlushWrites) to drop their write-TLB entries so their next store to it takes the
// slow path. As on hardware (SDM vol. 3A, 8.1.3), the executing vCPU sees another's store at
// its next block boundary, not mid-block.
//
// Ownership: owned by the VM (the accelerator); Cpus register and must unregister before it
// dies. Thread-safety: every method may be called from any vCPU thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace lamina::cpu::x86 {

class Cpu;

class SharedCodePages {
 public:
  // Tracks pages below `physical_limit` (the end of RAM); code elsewhere is never cached.
  explicit SharedCodePages(uint64_t physical_limit);

  void attach(Cpu* cpu);
  void detach(Cpu* cpu);

  bool tracked(uint64_t physical) const { return (physical >> 12) < page_count_; }
  uint32_t generation(uint64_t physical) const {
    return entries_[physical >> 12].load(std::memory_order_acquire) >> 1;
  }
  bool is_code(uint64_t physical) const {
    return entries_[physical >> 12].load(std::memory_order_acquire) & 1;
  }
  // Marks the page as holding translated code of `marker`; returns its generation.
  uint32_t mark_code(uint64_t physical, const Cpu* marker);
  // A store reached the page: its translations are stale everywhere. `writer`, the vCPU that
  // stored (null: a device), has dropped its own blocks of the page already and is not asked
  // to start a new chaining generation (which would retire all its links and patched exits).
  void note_write(uint64_t physical, const Cpu* writer = nullptr);

 private:
  uint64_t page_count_;
  std::unique_ptr<std::atomic<uint32_t>[]> entries_;  // generation << 1 | code bit
  std::mutex cpus_mutex_;
  std::vector<Cpu*> cpus_;
};

}  // namespace lamina::cpu::x86
