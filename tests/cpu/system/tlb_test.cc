#include "cpu/x86/system/tlb.h"

#include <gtest/gtest.h>

#include <cstring>

#include "cpu/x86/system/control_bits.h"

namespace lamina::cpu::x86 {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
using enum AccessType;

// Long-mode registers with WP and NX on, as Linux runs.
PagingRegisters long_mode() {
  return {.cr0 = cr0::kPg | cr0::kPe | cr0::kWp,
          .cr3 = 0x1000,
          .cr4 = cr4::kPae | cr4::kPge,
          .efer = efer::kLme | efer::kLma | efer::kNxe};
}

Translation page(uint64_t physical, bool writable, bool user, bool executable, bool dirty,
                 bool global = false, uint64_t size = 4096) {
  return Translation{physical, size, writable, user, executable, global, dirty};
}

class TlbTest : public ::testing::Test {
 protected:
  std::byte* host(uint64_t offset) { return backing_.data() + offset; }
  alignas(4096) std::array<std::byte, 16 * 4096> backing_{};
  PagingRegisters registers_ = long_mode();
  Tlb tlb_;
};

TEST_F(TlbTest, MissesWhenEmptyAndHitsAfterInsert) {
  EXPECT_EQ(tlb_.lookup(0x7000'1234, kRead, false), nullptr);
  EXPECT_EQ(tlb_.find(0x7000'1234), nullptr);
  tlb_.insert(0x7000'1234, page(0x5000, true, true, true, true), registers_, host(0x1000));
  for (bool user : {false, true}) {
    for (AccessType type : {kRead, kWrite, kExecute}) {
      EXPECT_EQ(tlb_.lookup(0x7000'1234, type, user), host(0x1234));
    }
  }
  EXPECT_EQ(tlb_.lookup(0x7000'1fff, kRead, true), host(0x1fff));
  EXPECT_EQ(tlb_.lookup(0x7000'2000, kRead, true), nullptr);  // next page
  // Same index, different tag.
  EXPECT_EQ(tlb_.lookup(0x7000'1234 + tlb_.size() * 4096, kRead, true), nullptr);
  ASSERT_NE(tlb_.find(0x7000'1000), nullptr);
  EXPECT_EQ(tlb_.find(0x7000'1000)->physical_page(), 0x5000u);
}

TEST_F(TlbTest, ConflictingPagesEvictEachOther) {
  static_assert((Tlb::size() & (Tlb::size() - 1)) == 0, "the index is a mask");
  const uint64_t conflicting = 0x1000 + Tlb::size() * 4096;
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0));
  tlb_.insert(conflicting, page(0x2000, true, true, true, true), registers_, host(0x1000));
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), nullptr);  // evicted by the conflicting page
  EXPECT_EQ(tlb_.lookup(conflicting, kRead, false), host(0x1000));
}

TEST_F(TlbTest, RightsSplitByAccessAndMode) {
  // Supervisor-only, read-only, no-execute page.
  tlb_.insert(0x1000, page(0x1000, false, false, false, true), registers_, host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, false), nullptr);  // CR0.WP = 1
  EXPECT_EQ(tlb_.lookup(0x1000, kExecute, false), nullptr);
  for (AccessType type : {kRead, kWrite, kExecute}) {
    EXPECT_EQ(tlb_.lookup(0x1000, type, true), nullptr);
  }
  EXPECT_TRUE(tlb_.find(0x1000)->permits(kRead, false));
  EXPECT_FALSE(tlb_.find(0x1000)->permits(kWrite, false));
  // With WP = 0 supervisor writes to read-only pages go through.
  registers_.cr0 &= ~cr0::kWp;
  tlb_.insert(0x1000, page(0x1000, false, true, true, true), registers_, host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, false), host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kExecute, true), host(0));
}

TEST_F(TlbTest, SmepAndSmapKeepSupervisorOffUserPages) {
  registers_.cr4 |= cr4::kSmep;
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kExecute, false), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kExecute, true), host(0));
  registers_.cr4 |= cr4::kSmap;
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), nullptr);  // EFLAGS.AC is the slow path's
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, false), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, true), host(0));
}

TEST_F(TlbTest, CleanPagesSendWritesToTheWalker) {
  tlb_.insert(0x1000, page(0x1000, true, true, true, false), registers_, host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, true), host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, true), nullptr);
  EXPECT_FALSE(tlb_.find(0x1000)->permits(kWrite, true));
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0));
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, true), host(0));
}

TEST_F(TlbTest, MmioPagesAreCachedWithoutHostPointers) {
  tlb_.insert(0xfee0'0000, page(0xfee0'0000, true, false, false, true), registers_, nullptr);
  EXPECT_EQ(tlb_.lookup(0xfee0'0030, kRead, false), nullptr);
  const TlbPage* entry = tlb_.find(0xfee0'0030);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->physical_page(), 0xfee0'0000u);
  EXPECT_TRUE(entry->permits(kWrite, false));
  EXPECT_FALSE(entry->permits(kRead, true));
}

TEST_F(TlbTest, TrappedWritesForCodePages) {
  tlb_.insert(0x1000, page(0x9000, true, true, true, true), registers_, host(0), TlbTraps{.writes = true});
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kExecute, true), host(0));
  // Two linear aliases of one physical page; trapping the physical page covers both.
  tlb_.insert(0x2000, page(0xa000, true, true, true, true), registers_, host(0x1000));
  tlb_.insert(0x5000, page(0xa000, true, true, true, true), registers_, host(0x1000));
  tlb_.insert(0x3000, page(0xb000, true, true, true, true), registers_, host(0x2000));
  tlb_.trap_writes_to_physical(0xa000);
  EXPECT_EQ(tlb_.lookup(0x2000, kWrite, false), nullptr);
  EXPECT_EQ(tlb_.lookup(0x5000, kWrite, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x5000, kRead, true), host(0x1000));
  EXPECT_EQ(tlb_.lookup(0x3000, kWrite, true), host(0x2000));
}

TEST_F(TlbTest, GlobalPagesSurviveCr3Reload) {
  tlb_.insert(0xffff'ffff'8100'0000, page(0x1000, true, false, true, true, true), registers_,
              host(0));
  tlb_.insert(0x40'1000, page(0x2000, true, true, true, true, false), registers_, host(0x1000));
  tlb_.flush_non_global();
  EXPECT_EQ(tlb_.lookup(0xffff'ffff'8100'0008, kRead, false), host(8));
  EXPECT_EQ(tlb_.lookup(0x40'1000, kRead, true), nullptr);
  tlb_.flush_all();
  EXPECT_EQ(tlb_.lookup(0xffff'ffff'8100'0008, kRead, false), nullptr);
}

TEST_F(TlbTest, FlushesDropExactlyTheNonGlobalEntriesOfAFullTable) {
  // Every index filled, every third page global.
  const auto linear = [](size_t i) { return 0x40'0000 + i * 4096; };
  const auto global = [](size_t i) { return i % 3 == 0; };
  for (size_t i = 0; i < Tlb::size(); ++i) {
    tlb_.insert(linear(i), page(0x1000, true, true, true, true, global(i)), registers_,
                host((i % 16) * 4096));
  }
  for (int round = 0; round < 2; ++round) {  // the kept entries are still tracked after one
    tlb_.flush_non_global();
    for (size_t i = 0; i < Tlb::size(); ++i) {
      EXPECT_EQ(tlb_.find(linear(i)) != nullptr, global(i)) << i << " round " << round;
    }
  }
  // A global entry replaced by a non-global page of the same index goes at the next flush.
  tlb_.insert(linear(3) + Tlb::size() * 4096, page(0x2000, true, true, true, true), registers_,
              host(0));
  tlb_.flush_non_global();
  EXPECT_EQ(tlb_.find(linear(3) + Tlb::size() * 4096), nullptr);
  EXPECT_EQ(tlb_.find(linear(3)), nullptr);
  EXPECT_NE(tlb_.find(linear(6)), nullptr);
  tlb_.flush_all();
  for (size_t i = 0; i < Tlb::size(); ++i) EXPECT_EQ(tlb_.find(linear(i)), nullptr) << i;
}

TEST_F(TlbTest, EntriesFilledAfterAFlushAreFoundAndFlushedAgain) {
  tlb_.insert(0x5000, page(0x1000, true, true, true, true), registers_, host(0));
  tlb_.flush_non_global();
  EXPECT_EQ(tlb_.lookup(0x5000, kRead, true), nullptr);
  tlb_.insert(0x5000, page(0x2000, true, true, true, true), registers_, host(0x1000));
  EXPECT_EQ(tlb_.lookup(0x5000, kRead, true), host(0x1000));
  // Refilled after an INVLPG too: the next CR3 load still drops it.
  tlb_.invalidate_page(0x5000);
  EXPECT_EQ(tlb_.lookup(0x5000, kRead, true), nullptr);
  tlb_.insert(0x5000, page(0x3000, true, true, true, true), registers_, host(0x2000));
  EXPECT_EQ(tlb_.lookup(0x5000, kRead, true), host(0x2000));
  tlb_.flush_non_global();
  EXPECT_EQ(tlb_.lookup(0x5000, kRead, true), nullptr);
  // After a full flush as well.
  tlb_.insert(0x6000, page(0x3000, true, true, true, true, true), registers_, host(0x2000));
  tlb_.flush_all();
  tlb_.insert(0x6000, page(0x3000, true, true, true, true), registers_, host(0x3000));
  EXPECT_EQ(tlb_.lookup(0x6000, kWrite, false), host(0x3000));
  tlb_.flush_non_global();
  EXPECT_EQ(tlb_.lookup(0x6000, kWrite, false), nullptr);
}

TEST_F(TlbTest, TrapPassesReachEntriesFilledAfterAFlush) {
  tlb_.insert(0x1000, page(0x7000, true, true, true, true), registers_, host(0));
  tlb_.flush_non_global();
  // Two linear pages mapping physical 0x7000, filled after the flush, and one other page.
  tlb_.insert(0x2000, page(0x7000, true, true, true, true), registers_, host(0x1000));
  tlb_.insert(0x9000, page(0x7000, true, true, true, true, true), registers_, host(0x1000));
  tlb_.insert(0x3000, page(0x8000, true, true, true, true), registers_, host(0x2000));
  tlb_.trap_writes_to_physical(0x7000);
  for (bool user : {false, true}) {
    EXPECT_EQ(tlb_.lookup(0x2000, kWrite, user), nullptr);
    EXPECT_EQ(tlb_.lookup(0x9000, kWrite, user), nullptr);
    EXPECT_EQ(tlb_.lookup(0x2000, kRead, user), host(0x1000));
    EXPECT_EQ(tlb_.lookup(0x3000, kWrite, user), host(0x2000));
  }
  tlb_.trap_all_writes();
  EXPECT_EQ(tlb_.lookup(0x3000, kWrite, false), nullptr);
  tlb_.trap_data(false);
  EXPECT_EQ(tlb_.lookup(0x3000, kRead, false), nullptr);
  EXPECT_EQ(tlb_.lookup(0x3000, kExecute, false), host(0x2000));
}

TEST_F(TlbTest, InvalidateOfALargePageAfterCr3LoadStillFlushesItsGlobalSlices) {
  // A global 2 MiB page's slices survive a CR3 load, and an INVLPG anywhere in it drops them.
  Translation large = page(0x60'0000, true, false, true, true, true, 2 * kMiB);
  tlb_.insert(0xffff'ffff'8100'0000, large, registers_, host(0));
  large.physical = 0x60'1000;
  tlb_.insert(0xffff'ffff'8100'1000, large, registers_, host(0x1000));
  tlb_.flush_non_global();
  EXPECT_EQ(tlb_.lookup(0xffff'ffff'8100'1000, kRead, false), host(0x1000));
  EXPECT_TRUE(tlb_.invalidate_page(0xffff'ffff'811f'f000));
  EXPECT_EQ(tlb_.find(0xffff'ffff'8100'0000), nullptr);
  EXPECT_EQ(tlb_.find(0xffff'ffff'8100'1000), nullptr);
}

TEST_F(TlbTest, InvalidatePageDropsOnePageIncludingGlobal) {
  tlb_.insert(0x1000, page(0x1000, true, true, true, true, true), registers_, host(0));
  tlb_.insert(0x2000, page(0x2000, true, true, true, true), registers_, host(0x1000));
  tlb_.invalidate_page(0x1abc);
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x2000, kRead, true), host(0x1000));
  // A page with the same index but another tag is not touched.
  tlb_.invalidate_page(0x2000 + tlb_.size() * 4096);
  EXPECT_EQ(tlb_.lookup(0x2000, kRead, true), host(0x1000));
}

TEST_F(TlbTest, InvalidateInsideLargePageDropsEverySlice) {
  // Two 4 KiB slices of one 2 MiB page at 0x20'0000.
  Translation large = page(0x60'0000, true, true, true, true, false, 2 * kMiB);
  tlb_.insert(0x20'0000, large, registers_, host(0));
  large.physical = 0x60'5000;
  tlb_.insert(0x20'5000, large, registers_, host(0x1000));
  tlb_.insert(0x90'0000, page(0x3000, true, true, true, true), registers_, host(0x2000));
  EXPECT_EQ(tlb_.find(0x20'5000)->physical_page(), 0x60'5000u);
  tlb_.invalidate_page(0x21'0000);  // another part of the same 2 MiB page
  EXPECT_EQ(tlb_.lookup(0x20'0000, kRead, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x20'5000, kRead, true), nullptr);
  // After that full flush the range is forgotten: a small-page INVLPG is exact again.
  tlb_.insert(0x90'0000, page(0x3000, true, true, true, true), registers_, host(0x2000));
  tlb_.insert(0x91'0000, page(0x4000, true, true, true, true), registers_, host(0x3000));
  tlb_.invalidate_page(0x90'0000);
  EXPECT_EQ(tlb_.lookup(0x91'0000, kRead, true), host(0x3000));
}

TEST_F(TlbTest, TrappedDataStaysOnTheSlowPathButFetchesDoNot) {
  // A data breakpoint in the page: reads and writes of both modes trap.
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0),
              TlbTraps{.data = true});
  for (bool user : {false, true}) {
    EXPECT_EQ(tlb_.lookup(0x1000, kRead, user), nullptr);
    EXPECT_EQ(tlb_.lookup(0x1000, kWrite, user), nullptr);
    EXPECT_EQ(tlb_.lookup(0x1000, kExecute, user), host(0));
    EXPECT_TRUE(tlb_.find(0x1000)->permits(kRead, user));
  }
  // Alignment checking: only user data accesses trap.
  tlb_.insert(0x2000, page(0x2000, true, true, true, true), registers_, host(0x1000),
              TlbTraps{.user_data = true});
  EXPECT_EQ(tlb_.lookup(0x2000, kRead, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x2000, kWrite, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x2000, kRead, false), host(0x1000));
  EXPECT_EQ(tlb_.lookup(0x2000, kWrite, false), host(0x1000));
}

TEST_F(TlbTest, TrapAllWritesAndTrapDataDropOnlyThoseSlots) {
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0));
  tlb_.trap_data(true);
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, true), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), host(0));
  tlb_.trap_all_writes();
  EXPECT_EQ(tlb_.lookup(0x1000, kWrite, false), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), host(0));
  tlb_.trap_data(false);
  EXPECT_EQ(tlb_.lookup(0x1000, kRead, false), nullptr);
  EXPECT_EQ(tlb_.lookup(0x1000, kExecute, true), host(0));
}

TEST_F(TlbTest, WithoutPagingEveryAccessIsPermittedEvenWithSmapSet) {
  // CR4.SMAP may be set while CR0.PG is clear; it means nothing until paging is on.
  const PagingRegisters flat{.cr4 = cr4::kSmap | cr4::kSmep};
  Translation identity{0x5000, 4096, true, true, true, false, true};
  tlb_.insert(0x5000, identity, flat, host(0));
  for (bool user : {false, true}) {
    for (AccessType type : {kRead, kWrite, kExecute}) {
      EXPECT_EQ(tlb_.lookup(0x5000, type, user), host(0));
    }
  }
}

// The access the JIT's inline lookup makes (translator_memory.cc, emit_tlb_host_offset): the
// current privilege's table, index (linear >> 12) & (kEntries - 1), the tag of `type` against
// the page of the operand's last byte, then linear + addend. nullptr: the slow path.
std::byte* inline_lookup(const Tlb& tlb, uint64_t linear, uint32_t size, AccessType type) {
  const TlbEntry& entry = (*tlb.current_table())[(linear >> 12) & (Tlb::kEntries - 1)];
  const uint64_t last_page = (linear + size - 1) & ~uint64_t{0xfff};
  if (entry.tag[static_cast<unsigned>(type)] != last_page) return nullptr;
  return reinterpret_cast<std::byte*>(linear + entry.addend);
}

// Whether an access may go straight to RAM, by the SDM's rules (4.6) rather than through
// access_permitted: user pages only for user accesses; writes need R/W (supervisor: or CR0.WP
// clear) and a set dirty flag; fetches need an executable page, and no user page for a
// supervisor fetch under SMEP; supervisor data accesses to user pages go slow under SMAP
// (EFLAGS.AC is the slow path's); traps and MMIO keep what they cover off the fast path.
bool expect_fast(const Translation& t, bool wp, bool smep, bool smap, const TlbTraps& traps,
                 bool ram, bool user, AccessType type) {
  if (!ram) return false;
  if (user && !t.user) return false;
  if (!user && t.user && (type == kExecute ? smep : smap)) return false;
  if (type == kWrite && (!t.dirty || (!t.writable && (user || wp)))) return false;
  if (type == kExecute && !t.executable) return false;
  if (type == kWrite && traps.writes) return false;
  if (type != kExecute && (traps.data || (user && traps.user_data))) return false;
  return true;
}

TEST_F(TlbTest, EveryPermissionAndTrapCombinationGivesTheFastPathExactlyWhenAllowed) {
  const uint64_t linear = 0x7fff'1234'5000;
  size_t fast = 0, slow = 0;
  for (unsigned bits = 0; bits < (1u << 12); ++bits) {
    const auto bit = [bits](unsigned n) { return ((bits >> n) & 1) != 0; };
    const Translation t = page(0x9000, bit(0), bit(1), bit(2), bit(3), bit(4));
    const bool wp = bit(5), smep = bit(6), smap = bit(7), ram = bit(11);
    const TlbTraps traps{.writes = bit(8), .data = bit(9), .user_data = bit(10)};
    PagingRegisters registers = long_mode();
    if (!wp) registers.cr0 &= ~cr0::kWp;
    if (smep) registers.cr4 |= cr4::kSmep;
    if (smap) registers.cr4 |= cr4::kSmap;
    tlb_.insert(linear + 0x234, t, registers, ram ? host(0x3000) : nullptr, traps);
    const TlbPage* cached = tlb_.find(linear);
    ASSERT_NE(cached, nullptr);
    EXPECT_EQ(cached->physical_page(), 0x9000u);
    EXPECT_EQ(cached->global(), t.global);
    for (bool user : {false, true}) {
      tlb_.set_user(user);
      for (AccessType type : {kRead, kWrite, kExecute}) {
        const bool expected = expect_fast(t, wp, smep, smap, traps, ram, user, type);
        const TlbEntry& entry = tlb_.entry(linear, user);
        SCOPED_TRACE(::testing::Message() << "bits " << std::hex << bits << " user " << user
                                          << " type " << static_cast<int>(type));
        // The tag alone decides: it holds the page exactly when the access may go to RAM.
        EXPECT_EQ(entry.tag[static_cast<unsigned>(type)],
                  expected ? linear : TlbEntry::kInvalidTag);
        EXPECT_EQ(tlb_.lookup(linear + 0x10, type, user), expected ? host(0x3010) : nullptr);
        EXPECT_EQ(inline_lookup(tlb_, linear + 0x10, 8, type), expected ? host(0x3010) : nullptr);
        // The rights the slow paths read (code_physical, find_block): the same without the
        // traps and for MMIO too (a clean page's writes still walk).
        EXPECT_EQ(cached->permits(type, user),
                  expect_fast(t, wp, smep, smap, TlbTraps{}, true, user, type));
        (expected ? fast : slow)++;
      }
    }
  }
  EXPECT_GT(fast, 0u);
  EXPECT_GT(slow, 0u);
}

TEST_F(TlbTest, InlineLookupUsesThePrivilegeOfTheCurrentTable) {
  // Supervisor-only page, and a user page read-only for both.
  tlb_.insert(0x1000, page(0x1000, true, false, true, true), registers_, host(0));
  tlb_.insert(0x2000, page(0x2000, false, true, false, true), registers_, host(0x1000));
  tlb_.set_user(false);
  EXPECT_EQ(inline_lookup(tlb_, 0x1008, 8, kWrite), host(8));
  EXPECT_EQ(inline_lookup(tlb_, 0x2008, 8, kRead), host(0x1008));
  EXPECT_EQ(inline_lookup(tlb_, 0x2008, 8, kWrite), nullptr);  // CR0.WP
  tlb_.set_user(true);
  EXPECT_EQ(inline_lookup(tlb_, 0x1008, 8, kRead), nullptr);
  EXPECT_EQ(inline_lookup(tlb_, 0x2008, 8, kRead), host(0x1008));
  EXPECT_EQ(inline_lookup(tlb_, 0x2008, 8, kWrite), nullptr);
  tlb_.set_user(false);
  EXPECT_EQ(inline_lookup(tlb_, 0x1008, 8, kRead), host(8));
}

TEST_F(TlbTest, InlineLookupMissesForCrossingsAndNonCanonicalAddresses) {
  tlb_.insert(0x1000, page(0x1000, true, true, true, true), registers_, host(0));
  tlb_.insert(0x2000, page(0x2000, true, true, true, true), registers_, host(0x1000));
  EXPECT_EQ(inline_lookup(tlb_, 0x1ff8, 8, kRead), host(0xff8));
  // Both pages cached, but the operand's last byte is in the next page: the tag of the first
  // page's index is not the page of the last byte.
  EXPECT_EQ(inline_lookup(tlb_, 0x1ff9, 8, kRead), nullptr);
  EXPECT_EQ(inline_lookup(tlb_, 0x1fff, 2, kWrite), nullptr);
  // A 16-byte run ending in the next page.
  EXPECT_EQ(inline_lookup(tlb_, 0x1ff8, 16, kRead), nullptr);
  // A non-canonical page is never cached, so nothing at its index matches it.
  const uint64_t non_canonical = 0x0000'8000'0000'1000;
  tlb_.insert(non_canonical, page(0x3000, true, true, true, true), registers_, host(0x2000));
  EXPECT_EQ(inline_lookup(tlb_, non_canonical, 1, kRead), nullptr);
  EXPECT_EQ(tlb_.find(non_canonical), nullptr);
  EXPECT_EQ(inline_lookup(tlb_, 0x1000, 1, kRead), host(0));  // its index kept its page
}

TEST_F(TlbTest, DropsAndTrapsReachEveryTagOfBothPrivileges) {
  const auto all_invalid = [this](uint64_t linear) {
    for (bool user : {false, true}) {
      for (uint64_t tag : tlb_.entry(linear, user).tag) {
        if (tag != TlbEntry::kInvalidTag) return false;
      }
    }
    return true;
  };
  const auto fill = [this](uint64_t linear, uint64_t physical, bool global = false) {
    tlb_.insert(linear, page(physical, true, true, true, true, global), registers_, host(0));
  };
  fill(0x1000, 0x1000);
  ASSERT_FALSE(all_invalid(0x1000));
  tlb_.invalidate_page(0x1000);
  EXPECT_TRUE(all_invalid(0x1000));
  fill(0x1000, 0x1000);
  fill(0x2000, 0x2000, true);
  tlb_.flush_non_global();
  EXPECT_TRUE(all_invalid(0x1000));
  EXPECT_FALSE(all_invalid(0x2000));
  tlb_.flush_all();
  EXPECT_TRUE(all_invalid(0x2000));
  // Trapped writes to a code page: the write tags of both privileges, nothing else.
  fill(0x3000, 0x7000);
  tlb_.trap_writes_to_physical(0x7000);
  for (bool user : {false, true}) {
    EXPECT_EQ(tlb_.entry(0x3000, user).tag[static_cast<unsigned>(kWrite)], TlbEntry::kInvalidTag);
    EXPECT_EQ(tlb_.entry(0x3000, user).tag[static_cast<unsigned>(kRead)], 0x3000u);
    EXPECT_EQ(tlb_.entry(0x3000, user).tag[static_cast<unsigned>(kExecute)], 0x3000u);
  }
  // A stale TlbPage tag left by no drop: insert of another page at the index replaces all.
  fill(0x3000 + Tlb::size() * 4096, 0x8000);
  for (bool user : {false, true}) {
    for (AccessType type : {kRead, kWrite, kExecute}) {
      EXPECT_EQ(tlb_.lookup(0x3000, type, user), nullptr);
      EXPECT_EQ(tlb_.lookup(0x3000 + Tlb::size() * 4096, type, user), host(0));
    }
  }
}

TEST_F(TlbTest, WorksWithTheWalker) {
  auto memory = GuestMemory::create({{0, 16 * kMiB}});
  ASSERT_TRUE(memory.has_value());
  auto put = [&](uint64_t address, uint64_t value) {
    std::memcpy(memory->host_pointer(address, 8), &value, 8);
  };
  // 4-level tables mapping linear 0x3000 to physical 0x70'3000, present, RW, user, clean.
  put(0x1000, 0x2000 | 7);
  put(0x2000, 0x3000 | 7);
  put(0x3000, 0x4000 | 7);
  put(0x4018, 0x70'3000 | 7);
  AccessContext read{kRead, true};
  auto translation = walk_page_tables(registers_, *memory, 0x3010, read);
  ASSERT_TRUE(translation.has_value());
  tlb_.insert(0x3010, *translation, registers_,
              memory->host_pointer(translation->physical & ~uint64_t{0xfff}, 4096));
  EXPECT_EQ(tlb_.lookup(0x3010, kRead, true), memory->host_pointer(0x70'3010, 1));
  EXPECT_EQ(tlb_.lookup(0x3010, kWrite, true), nullptr);  // D is still clear
  // The guest unmaps the page: the TLB keeps the stale entry until INVLPG, as hardware does.
  put(0x4018, 0);
  EXPECT_NE(tlb_.lookup(0x3010, kRead, true), nullptr);
  tlb_.invalidate_page(0x3000);
  EXPECT_EQ(tlb_.lookup(0x3010, kRead, true), nullptr);
  EXPECT_FALSE(walk_page_tables(registers_, *memory, 0x3010, read).has_value());
}

}  // namespace
}  // namespace lamina::cpu::x86
