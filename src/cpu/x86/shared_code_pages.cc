#include "cpu/x86/shared_code_pages.h"

#include <algorithm>

#include "cpu/x86/cpu.h"

namespace lamina::cpu::x86 {

SharedCodePages::SharedCodePages(uint64_t physical_limit)
    : page_count_((physical_limit + 0xfff) >> 12), entries_(new std::atomic<uint32_t>[page_count_]) {
  for (uint64_t i = 0; i < page_count_; ++i) entries_[i].store(0, std::memory_order_relaxed);
}

void SharedCodePages::attach(Cpu* cpu) {
  std::lock_guard lock(cpus_mutex_);
  cpus_.push_back(cpu);
}

void SharedCodePages::detach(Cpu* cpu) {
  std::lock_guard lock(cpus_mutex_);
  cpus_.erase(std::remove(cpus_.begin(), cpus_.end(), cpu), cpus_.end());
}

uint32_t SharedCodePages::mark_code(uint64_t physical, const Cpu* marker) {
  std::atomic<uint32_t>& entry = entries_[physical >> 12];
  const uint32_t before = entry.fetch_or(1, std::memory_order_acq_rel);
  if (!(before & 1)) {
    // Newly code: other vCPUs may hold write-TLB entries that would bypass the slow path.
    std::lock_guard lock(cpus_mutex_);
    for (Cpu* cpu : cpus_)
      if (cpu != marker) cpu->post(request::kFlushWrites);
  }
  return before >> 1;
}

void SharedCodePages::note_write(uint64_t physical, const Cpu* writer) {
  std::atomic<uint32_t>& entry = entries_[physical >> 12];
  uint32_t value = entry.load(std::memory_order_acquire);
  while ((value & 1) && !entry.compare_exchange_weak(value, (value & ~1u) + 2, std::memory_order_acq_rel)) {
  }
  if (!(value & 1)) return;
  // The page was code: every vCPU starts a new chaining generation at its next boundary, so
  // translated code that jumps block to block without the run loop's checks (jit/) stops
  // following links into it. Posted after the bump, so a vCPU that sees the request sees it.
  // The writer itself dropped its blocks of the page as it stored (BlockCache::invalidate_page,
  // which moves its generation on when a link led to one of them): with one vCPU, its own
  // request was 60% of the mixed workload's chaining epochs.
  std::lock_guard lock(cpus_mutex_);
  for (Cpu* cpu : cpus_) {
    if (cpu != writer) cpu->post(request::kCodeWritten);
  }
}

}  // namespace lamina::cpu::x86
