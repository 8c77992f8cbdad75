// BlockCache's bounds: decoded instructions stay under the limit however many blocks a guest
// makes, and the page index keeps no key of a dropped block (page-crossing blocks included).
#include "cpu/x86/block_cache.h"

#include <gtest/gtest.h>

#include <memory>

namespace lamina::cpu::x86 {
namespace {

std::unique_ptr<Block> make_block(uint64_t physical, uint64_t last_page, size_t instructions) {
  auto block = std::make_unique<Block>();
  block->physical = physical;
  block->last_page = last_page;
  block->instructions.resize(instructions);
  return block;
}

TEST(BlockCacheTest, DecodedInstructionsStayWithinTheBound) {
  BlockCache cache(1000);
  // A NOP sled entered at every byte: each entry point another block of up to 64 instructions.
  for (uint64_t entry = 0; entry < 100000; ++entry) {
    cache.insert(make_block(0x100000 + entry, (0x100000 + entry) & ~uint64_t{0xfff}, 64 - entry % 64));
    ASSERT_LE(cache.instructions(), 1000u);
    cache.release_retired();
  }
  EXPECT_GT(cache.bound_flushes(), 0u);
  EXPECT_LE(cache.indexed_pages(), 1000u);
}

TEST(BlockCacheTest, DroppingAPageCrossingBlockPrunesBothPages) {
  BlockCache cache;
  cache.insert(make_block(0x1ffa, 0x2000, 3));
  EXPECT_EQ(cache.indexed_pages(), 2u);
  EXPECT_TRUE(cache.invalidate_page(0x1000, nullptr) == false);
  EXPECT_EQ(cache.size(), 0u);
  // The second page's key went with the block: the index is empty, not stale.
  EXPECT_EQ(cache.indexed_pages(), 0u);
  EXPECT_FALSE(cache.is_code_page(0x2000));
  EXPECT_EQ(cache.instructions(), 0u);
}

TEST(BlockCacheTest, ReplacingABlockKeepsTheCountsRight) {
  BlockCache cache;
  cache.insert(make_block(0x5000, 0x5000, 10));
  cache.insert(make_block(0x5000, 0x5000, 4));
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.instructions(), 4u);
  EXPECT_EQ(cache.indexed_pages(), 1u);
}

}  // namespace
}  // namespace lamina::cpu::x86
