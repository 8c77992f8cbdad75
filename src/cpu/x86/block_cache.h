#pragma once
// BlockCache: decoded basic blocks keyed by the guest-physical address of their first byte and
// the code mode, with the bookkeeping to drop every block of a physical page when that page is
// written (self-modifying code, DMA).
//
// Memory is bounded: when the decoded instructions of all blocks would pass max_instructions
// the cache drops every block (as the JIT's code cache does when full), so no guest code,
// however much of it runs, makes it grow further; the page index holds only live blocks' keys.
//
// Ownership: owns its blocks. A block invalidated while it runs is kept until release_retired().
// Thread-safety: one cache per vCPU, used only by its thread.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "cpu/x86/instruction.h"

namespace lamina::cpu::x86 {

struct Block {
  uint64_t physical = 0;    // guest-physical address of the first byte
  uint64_t last_page = 0;   // physical page of the last byte (differs when it crosses a page)
  // Whether its last instruction runs into the next linear page. (Its last page equal to its
  // first says less: two linear pages may map one physical page.)
  bool crosses_page = false;
  CodeMode mode = CodeMode::k64;
  std::vector<Instruction> instructions;
  // SharedCodePages generations of the first and last page when translated.
  uint32_t first_generation = 0, last_generation = 0;
  // Successor cache ("chaining"): the block found last time RIP was `rip` after this one. Valid
  // only while the cache's generation is unchanged (no invalidation, TLB flush or mode change).
  // `body` is the successor's translated body once the JIT has seen it translated under that
  // generation (translated code then jumps there without leaving generated code).
  struct Link {
    uint64_t rip = ~uint64_t{0};
    uint64_t generation = 0;
    Block* block = nullptr;
    const std::byte* body = nullptr;
  };
  Link links[2];
  uint8_t next_link = 0;
  // The JIT's host code for this block (jit/jit_engine.h), valid while the code cache's epoch
  // is still code_epoch; dropped with the block.
  const std::byte* code = nullptr;
  uint64_t code_epoch = 0;
  // Runs on the JIT's path before it is translated: code run once (churned, in MMIO) is not
  // worth translating.
  uint32_t runs = 0;
  // The cache's generation when a link, jump cache entry or patched exit last led here
  // (BlockCache::note_linked): a block nothing of the current generation leads to is dropped
  // without a new generation.
  uint64_t linked_generation = 0;
};

// Whether `block`'s bytes lie in one page.
inline bool within_one_page(const Block& block) { return !block.crosses_page; }

class BlockCache {
 public:
  // About 48 bytes per decoded instruction: 12 MiB of instructions, plus the blocks' overhead;
  // several times the hot code of a Linux guest.
  static constexpr size_t kDefaultMaxInstructions = size_t{256} * 1024;

  explicit BlockCache(size_t max_instructions = kDefaultMaxInstructions);

  Block* find(uint64_t physical, CodeMode mode) {
    const uint64_t key = make_key(physical, mode);
    Block* block = lookup_[lookup_index(key)];
    if (block != nullptr && block->physical == physical && block->mode == mode) return block;
    return find_slow(key);
  }
  Block* insert(std::unique_ptr<Block> block);

  bool is_code_page(uint64_t physical_page) const { return page_blocks_.contains(physical_page); }
  // Drops every block touching the page; returns true when `running` was one of them.
  bool invalidate_page(uint64_t physical_page, const Block* running);
  void clear();
  // Moves on whenever a chained successor may have become wrong. Bits 32-63 count epochs
  // (new_generation: anything that can make any link wrong), bits 1-30 address spaces within
  // the epoch (new_address_space: a flush of the non-global TLB entries, i.e. a CR3 load); bit
  // 0 is the privilege side (set_user_context), so user and supervisor code each find only
  // their own links.
  uint64_t generation() const { return generation_; }
  // What a link to a block on a global page (64-bit code, the whole block in one page) is
  // recorded under: it holds in every address space of the epoch, as the TLB keeps global
  // translations over CR3 loads (SDM 4.10.2.4). Never equal to a generation() value.
  uint64_t global_generation() const { return global_generation_; }
  // Whether a link, jump cache entry or patched exit recorded under `recorded` still holds.
  bool current(uint64_t recorded) const { return recorded == generation_ || recorded == global_generation_; }
  // Where the generations live, for translated code that compares them inline.
  const uint64_t* generation_address() const { return &generation_; }
  const uint64_t* global_generation_address() const { return &global_generation_; }
  void new_generation() {
    generation_ = (((generation_ >> 32) + 1) << 32) | (generation_ & 1);
    global_generation_ = global_of(generation_);
    linked_pages_.fill(0);
  }
  void new_address_space() {
    const uint64_t space = ((generation_ & kSpaceBits) + 2) & kSpaceBits;
    // 2^30 address spaces in one epoch: a new epoch rather than a value seen before.
    if (space == 0) return new_generation();
    generation_ = (generation_ & ~kSpaceBits) | space;
  }
  // The linear pages (64-bit code) of every block a link or jump cache entry of this generation
  // leads to, hashed into a bitmap: an INVLPG of any other page cannot make one of them wrong
  // and leaves the generation as it is (a hash collision only costs a new generation).
  // `block` crossing into the next page marks that one too (whatever physical page it maps).
  void note_linked(uint64_t rip, Block& block) {
    block.linked_generation = generation_;
    mark_page(rip >> 12);
    if (block.crosses_page) mark_page((rip >> 12) + 1);
  }
  bool page_linked(uint64_t linear) const {
    const uint64_t bit = (linear >> 12) % kLinkedPageBits;
    return (linked_pages_[bit / 64] >> (bit % 64)) & 1;
  }
  void set_user_context(bool user) {
    generation_ = (generation_ & ~uint64_t{1}) | (user ? 1 : 0);
    global_generation_ = global_of(generation_);
  }
  // Whether a link of this epoch may lead to `block` (it must not be dropped without a new one).
  bool linked_in_epoch(const Block& block) const { return (block.linked_generation >> 32) == (generation_ >> 32); }
  // Frees blocks invalidated while they were executing.
  void release_retired() { retired_.clear(); }
  bool has_retired() const { return !retired_.empty(); }
  size_t size() const { return blocks_.size(); }
  // Decoded instructions held by live blocks; pages indexed; times the bound dropped them all.
  size_t instructions() const { return instructions_; }
  size_t indexed_pages() const { return page_blocks_.size(); }
  uint64_t bound_flushes() const { return bound_flushes_; }

 private:
  static constexpr size_t kLookupSize = 8192;
  // The page offset mixed with the page number: blocks at one offset of many pages (function
  // starts, page starts) must not all land in one slot.
  static size_t lookup_index(uint64_t key) { return (key ^ (key >> 14) ^ (key >> 27)) % kLookupSize; }
  static constexpr uint64_t kLinkedPageBits = 4096;
  void mark_page(uint64_t page) {
    const uint64_t bit = page % kLinkedPageBits;
    linked_pages_[bit / 64] |= uint64_t{1} << (bit % 64);
  }
  std::array<uint64_t, kLinkedPageBits / 64> linked_pages_{};
  static uint64_t make_key(uint64_t physical, CodeMode mode) {
    return (physical << 2) | static_cast<uint64_t>(mode);
  }
  Block* find_slow(uint64_t key);
  void remove(uint64_t key);
  void unindex(uint64_t page, uint64_t key);

  std::unordered_map<uint64_t, std::unique_ptr<Block>> blocks_;
  std::array<Block*, kLookupSize> lookup_{};
  std::unordered_map<uint64_t, std::vector<uint64_t>> page_blocks_;  // page -> block keys
  std::vector<std::unique_ptr<Block>> retired_;
  static constexpr uint64_t kSpaceBits = 0x7ffffffe;
  static constexpr uint64_t kGlobalMark = uint64_t{1} << 31;
  static uint64_t global_of(uint64_t generation) { return (generation & ~kSpaceBits) | kGlobalMark; }
  // Epoch 1: never 0, a Link's or jump cache entry's initial generation.
  uint64_t generation_ = uint64_t{1} << 32;
  uint64_t global_generation_ = global_of(uint64_t{1} << 32);
  size_t max_instructions_;
  size_t instructions_ = 0;
  uint64_t bound_flushes_ = 0;
};

}  // namespace lamina::cpu::x86
