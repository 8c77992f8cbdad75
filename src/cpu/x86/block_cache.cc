#include "cpu/x86/block_cache.h"

#include <algorithm>

namespace lamina::cpu::x86 {

namespace {
constexpr uint64_t kPageMask = ~uint64_t{0xfff};
}

BlockCache::BlockCache(size_t max_instructions) : max_instructions_(max_instructions) {
  lookup_.fill(nullptr);
}

Block* BlockCache::find_slow(uint64_t key) {
  const auto found = blocks_.find(key);
  if (found == blocks_.end()) return nullptr;
  lookup_[lookup_index(key)] = found->second.get();
  return found->second.get();
}

Block* BlockCache::insert(std::unique_ptr<Block> block) {
  const uint64_t key = make_key(block->physical, block->mode);
  remove(key);
  if (instructions_ + block->instructions.size() > max_instructions_) {
    clear();
    ++bound_flushes_;
  }
  instructions_ += block->instructions.size();
  Block* raw = block.get();
  page_blocks_[block->physical & kPageMask].push_back(key);
  if ((block->last_page & kPageMask) != (block->physical & kPageMask))
    page_blocks_[block->last_page & kPageMask].push_back(key);
  blocks_[key] = std::move(block);
  lookup_[lookup_index(key)] = raw;
  return raw;
}

void BlockCache::remove(uint64_t key) {
  const auto found = blocks_.find(key);
  if (found == blocks_.end()) return;
  Block& block = *found->second;
  // Links, jump cache entries and patched exits of older epochs are dead already.
  if (linked_in_epoch(block)) new_generation();
  if (lookup_[lookup_index(key)] == &block) lookup_[lookup_index(key)] = nullptr;
  instructions_ -= block.instructions.size();
  // Both pages' index entries go with the block (a page-crossing block's other page would
  // otherwise keep a stale key for as long as that page is never written).
  unindex(block.physical & kPageMask, key);
  if ((block.last_page & kPageMask) != (block.physical & kPageMask)) unindex(block.last_page & kPageMask, key);
  retired_.push_back(std::move(found->second));
  blocks_.erase(found);
}

void BlockCache::unindex(uint64_t page, uint64_t key) {
  const auto entry = page_blocks_.find(page);
  if (entry == page_blocks_.end()) return;
  std::erase(entry->second, key);
  if (entry->second.empty()) page_blocks_.erase(entry);
}

bool BlockCache::invalidate_page(uint64_t physical_page, const Block* running) {
  const auto page = page_blocks_.find(physical_page & kPageMask);
  if (page == page_blocks_.end()) return false;
  bool hit_running = false;
  const std::vector<uint64_t> keys = std::move(page->second);
  page_blocks_.erase(page);
  for (const uint64_t key : keys) {
    const auto found = blocks_.find(key);
    if (found == blocks_.end()) continue;
    if (found->second.get() == running) hit_running = true;
    remove(key);
  }
  return hit_running;
}

void BlockCache::clear() {
  new_generation();
  for (auto& [key, block] : blocks_) retired_.push_back(std::move(block));
  blocks_.clear();
  page_blocks_.clear();
  instructions_ = 0;
  lookup_.fill(nullptr);
}

}  // namespace lamina::cpu::x86
