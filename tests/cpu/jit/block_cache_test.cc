// BlockCache's bounds: decoded instructions stay under the limit however many blocks a guest
// makes, and the page index keeps no key of a dropped block (page-crossing blocks included).
#include "cpu/x86/block_cache.h"

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <utility>

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

// The chaining generation: user and supervisor code each see their own value (links recorded
// on one side are not followed on the other), a new generation retires both sides' values for
// good, and so does dropping a block a link leads to (links to it must never be followed again).
TEST(BlockCacheTest, GenerationsSeparatePrivilegeSidesAndNeverComeBack) {
  BlockCache cache;
  std::set<uint64_t> retired;
  cache.set_user_context(false);
  const uint64_t supervisor = cache.generation();
  cache.set_user_context(true);
  const uint64_t user = cache.generation();
  EXPECT_NE(supervisor, user);
  EXPECT_NE(supervisor, 0u);  // a Link's initial generation
  cache.set_user_context(false);
  EXPECT_EQ(cache.generation(), supervisor);  // back on its side: its links hold again
  const auto both_sides = [&cache] {
    cache.set_user_context(false);
    const uint64_t supervisor_side = cache.generation();
    cache.set_user_context(true);
    return std::pair{supervisor_side, cache.generation()};
  };
  retired = {supervisor, user};
  for (int action = 0; action < 3; ++action) {
    for (bool from_user : {false, true}) {
      cache.set_user_context(from_user);
      switch (action) {
        case 0: cache.new_generation(); break;
        case 1: {
          // A block a link of this epoch leads to.
          Block* block = cache.insert(make_block(0x5000, 0x5000, 3));
          cache.note_linked(0x5000, *block);
          cache.invalidate_page(0x5000, nullptr);
          break;
        }
        default: cache.clear(); break;
      }
      cache.release_retired();
      const auto [now_supervisor, now_user] = both_sides();
      EXPECT_FALSE(retired.contains(now_supervisor)) << "action " << action << " from user " << from_user;
      EXPECT_FALSE(retired.contains(now_user)) << "action " << action << " from user " << from_user;
      retired.insert(now_supervisor);
      retired.insert(now_user);
    }
  }
}

// INVLPG of a page no link or jump cache entry leads to keeps the generation: the pages of the
// blocks they lead to (both of a page-crossing one) are known until the generation moves on.
TEST(BlockCacheTest, LinkedPagesAreKnownUntilTheNextGeneration) {
  BlockCache cache;
  const auto within = make_block(0x7000, 0x7000, 2);
  const auto crossing = make_block(0x9ffc, 0xa000, 2);
  crossing->crosses_page = true;
  // Crossing onto its own page (two linear pages, one physical page): its bytes still run on.
  const auto aliased = make_block(0xbffc, 0xb000, 2);
  aliased->crosses_page = true;
  cache.note_linked(0x405ffc, *aliased);
  cache.note_linked(0x401000, *within);
  cache.note_linked(0x402ffc, *crossing);
  EXPECT_TRUE(cache.page_linked(0x401abc));
  EXPECT_TRUE(cache.page_linked(0x402000));
  EXPECT_TRUE(cache.page_linked(0x403000));  // the crossing block's second page
  EXPECT_FALSE(cache.page_linked(0x404000));
  EXPECT_FALSE(cache.page_linked(0x400000));
  EXPECT_TRUE(cache.page_linked(0x406000));  // the aliased block's next linear page
  cache.new_generation();
  EXPECT_FALSE(cache.page_linked(0x401000));
  EXPECT_FALSE(cache.page_linked(0x403000));
}

// A CR3 load (new_address_space) retires what was recorded under the generation but keeps the
// global generation, of links to code on global pages; a new epoch retires both, on both
// privilege sides.
TEST(BlockCacheTest, AnAddressSpaceKeepsOnlyTheGlobalGenerationAndAnEpochNeither) {
  BlockCache cache;
  cache.set_user_context(true);
  const uint64_t user_global = cache.global_generation();
  cache.set_user_context(false);
  const uint64_t generation = cache.generation();
  const uint64_t global = cache.global_generation();
  EXPECT_NE(generation, global);
  EXPECT_NE(global, user_global);
  EXPECT_TRUE(cache.current(generation));
  EXPECT_TRUE(cache.current(global));
  EXPECT_FALSE(cache.current(user_global));
  cache.new_address_space();
  EXPECT_FALSE(cache.current(generation));
  EXPECT_TRUE(cache.current(global));
  EXPECT_NE(cache.generation(), global);
  cache.set_user_context(true);
  EXPECT_TRUE(cache.current(user_global));
  cache.set_user_context(false);
  cache.new_generation();
  EXPECT_FALSE(cache.current(global));
  cache.set_user_context(true);
  EXPECT_FALSE(cache.current(user_global));
}

// Dropping a block that a link of this epoch leads to starts a new epoch, also after a CR3
// load (a global link may still lead there); one nothing of the epoch leads to keeps it.
TEST(BlockCacheTest, DroppingALinkedBlockStartsANewEpoch) {
  BlockCache cache;
  const uint64_t global = cache.global_generation();
  cache.insert(make_block(0x5000, 0x5000, 3));
  cache.invalidate_page(0x5000, nullptr);
  EXPECT_TRUE(cache.current(global));
  Block* linked = cache.insert(make_block(0x6000, 0x6000, 3));
  cache.note_linked(0x406000, *linked);
  cache.new_address_space();
  EXPECT_TRUE(cache.current(global));
  cache.invalidate_page(0x6000, nullptr);
  EXPECT_FALSE(cache.current(global));
}

}  // namespace
}  // namespace lamina::cpu::x86
