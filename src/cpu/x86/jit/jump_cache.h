#pragma once
// JumpCache: guest RIP -> translated successor, for the block exits whose target is known only
// at run time (RET, indirect JMP/CALL, and direct exits whose two per-block links are taken).
// Translated code looks it up inline at a block's end; an entry is valid only while the
// BlockCache's chaining generation (or, for a block on a global page, its global generation)
// is the one it was recorded under, and those move on every TLB flush (CR3 loads: the
// generation only), mode or CS change, dropped block, code cache flush and cross-vCPU code
// write, so a hit is always the block the run loop's lookup would find for that RIP.
//
// Ownership: holds borrowed Block pointers, never dereferenced by C++ unless the generation
// still matches. Thread-safety: one per vCPU, used only by its thread.

#include <array>
#include <cstddef>
#include <cstdint>

#include "cpu/x86/block_cache.h"

namespace lamina::cpu::x86::jit {

class JumpCache {
 public:
  // One way, direct mapped; translated code indexes it with the same hash (index_of).
  static constexpr uint32_t kEntries = 4096;
  struct Entry {
    uint64_t rip = ~uint64_t{0};
    uint64_t generation = 0;
    const std::byte* body = nullptr;  // where the block's translated body starts
    Block* block = nullptr;
  };
  static_assert(sizeof(Entry) == 32, "translated code scales the index by 32");

  // The entry for `rip`: its page offset mixed with the page number, so that the same offset
  // in kernel and user pages lands apart.
  static uint32_t index_of(uint64_t rip) { return static_cast<uint32_t>(rip ^ (rip >> 12)) & (kEntries - 1); }

  void record(uint64_t rip, uint64_t generation, const std::byte* body, Block* block) {
    entries_[index_of(rip)] = Entry{rip, generation, body, block};
  }
  // The entry's block when it was recorded under `generation` or `global_generation`.
  Block* find(uint64_t rip, uint64_t generation, uint64_t global_generation) const {
    const Entry& entry = entries_[index_of(rip)];
    const bool current = entry.generation == generation || entry.generation == global_generation;
    return entry.rip == rip && current ? entry.block : nullptr;
  }
  const Entry* entries() const { return entries_.data(); }

 private:
  std::array<Entry, kEntries> entries_{};
};

}  // namespace lamina::cpu::x86::jit
