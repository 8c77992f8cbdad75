// Robustness of the page walker against arbitrary guest page tables: random (but mostly
// in-RAM) entries, random control registers and addresses. Nothing may crash or read outside
// RAM (run under -DLAMINA_SANITIZE=ON), and every result must obey the architectural invariants.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cpu/x86/system/control_bits.h"
#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {
namespace {

constexpr uint64_t kRamSize = 2 << 20;

TEST(PageWalkerFuzz, ArbitraryTablesKeepInvariants) {
  auto memory = GuestMemory::create({{0, kRamSize}});
  ASSERT_TRUE(memory.has_value());
  std::mt19937_64 random(20261124);
  auto fill = [&] {
    auto* words = reinterpret_cast<uint64_t*>(memory->host_pointer(0, kRamSize));
    for (uint64_t i = 0; i < kRamSize / 8; ++i) {
      uint64_t value = random();
      // One word in eight is anything at all; the others are mostly present, writable, user
      // and small, so walks reach the lower levels and pass.
      if (random() % 8 != 0) {
        auto one_in = [&](unsigned n) { return random() % n == 0 ? uint64_t{1} : 0; };
        value = (value & 0x1ff000) | (value & 0xe78);  // frame, PWT/PCD/A/D/G, bits 11:9
        value |= (1 - one_in(16)) | (1 - one_in(4)) << 1 | (1 - one_in(4)) << 2;
        value |= one_in(4) << 7 | one_in(8) << 63;
      }
      words[i] = value;
    }
  };
  fill();
  int successes = 0, faults = 0;
  for (int i = 0; i < 20000; ++i) {
    if (i % 5000 == 4999) fill();
    PagingRegisters registers;
    registers.cr0 = cr0::kPe | cr0::kPg | (random() % 2 ? cr0::kWp : 0);
    unsigned mode = random() % 3;
    registers.cr4 = (random() % 2 ? cr4::kPse : 0) | (random() % 2 ? cr4::kPge : 0) |
                    (random() % 4 == 0 ? cr4::kSmep | cr4::kSmap : 0) | (mode > 0 ? cr4::kPae : 0);
    registers.efer = (mode == 2 ? efer::kLme | efer::kLma : 0) | (random() % 2 ? efer::kNxe : 0);
    // CR3 mostly inside RAM; sometimes beyond it.
    registers.cr3 = random() % 16 == 0 ? random() : (random() % kRamSize) & ~uint64_t{0x1f};
    uint64_t linear = random();
    AccessContext context{static_cast<AccessType>(random() % 3), random() % 2 == 0,
                          random() % 2 == 0};
    if (context.user) context.eflags_ac = false;
    PagingFeatures features;
    features.physical_address_bits = static_cast<uint8_t>(32 + random() % 21);
    features.gigabyte_pages = random() % 2 == 0;
    features.pse36 = random() % 2 == 0;

    auto first = walk_page_tables(registers, *memory, linear, context, features);
    uint64_t effective = mode == 2 ? linear : linear & 0xffffffff;
    if (first) {
      ++successes;
      const Translation& t = *first;
      ASSERT_TRUE(t.page_size == 4096 || t.page_size == (2u << 20) || t.page_size == (4u << 20) ||
                  t.page_size == (1u << 30));
      ASSERT_TRUE(t.page_size != (4u << 20) || mode == 0);
      ASSERT_TRUE(t.page_size != (2u << 20) || mode != 0);
      ASSERT_TRUE(t.page_size != (1u << 30) || (mode == 2 && features.gigabyte_pages));
      ASSERT_EQ((t.physical ^ effective) & (t.page_size - 1), 0u);
      ASSERT_LT(t.physical, uint64_t{1} << features.physical_address_bits);
      ASSERT_TRUE(access_permitted(t, registers, context));
      ASSERT_TRUE(t.dirty || context.type != AccessType::kWrite);
      // Walking again gives the same translation (only A/D bits changed, and they are set now).
      auto second = walk_page_tables(registers, *memory, linear, context, features);
      ASSERT_TRUE(second.has_value());
      ASSERT_EQ(second->physical, t.physical);
      ASSERT_TRUE(second->dirty == t.dirty || context.type != AccessType::kWrite);
    } else {
      ++faults;
      const PageFault& f = first.error();
      ASSERT_EQ(f.linear, effective);
      ASSERT_EQ(f.error_code & ~0x1fu, 0u);
      ASSERT_EQ((f.error_code & page_fault_error::kWrite) != 0, context.type == AccessType::kWrite);
      ASSERT_EQ((f.error_code & page_fault_error::kUser) != 0, context.user);
      if ((f.error_code & page_fault_error::kReserved) != 0) {
        ASSERT_NE(f.error_code & page_fault_error::kPresent, 0u);
      }
      if (f.table_outside_ram) {
        ASSERT_EQ(f.error_code & 0x9u, 0x9u);
      }
      // A faulting walk changes nothing, so it faults the same way again.
      auto again = walk_page_tables(registers, *memory, linear, context, features);
      ASSERT_FALSE(again.has_value());
      ASSERT_EQ(again.error().error_code, f.error_code);
    }
  }
  // The generator must exercise both outcomes, or the test proves little.
  EXPECT_GT(successes, 1000);
  EXPECT_GT(faults, 1000);
}

}  // namespace
}  // namespace lamina::cpu::x86
