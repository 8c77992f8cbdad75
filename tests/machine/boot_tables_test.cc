#include "machine/boot_tables.h"

#include <gtest/gtest.h>

#include "base/byte_order.h"
#include "machine/memory_layout.h"

namespace lamina::machine {
namespace {

// Decodes a GDT descriptor (Intel SDM vol. 3, section 3.4.5) into the hidden-state form of
// boot_state.h, independently of the code that encoded it.
SegmentState decode(uint16_t selector, uint64_t descriptor) {
  SegmentState state;
  state.selector = selector;
  state.base = ((descriptor >> 16) & 0xFFFFFF) | (((descriptor >> 56) & 0xFF) << 24);
  uint32_t limit = static_cast<uint32_t>((descriptor & 0xFFFF) | (((descriptor >> 48) & 0xF) << 16));
  const bool granular = (descriptor >> 55) & 1;
  if (granular) limit = (limit << 12) | 0xFFF;
  state.limit = limit;
  const auto access = static_cast<uint16_t>((descriptor >> 40) & 0xFF);       // type, S, DPL, P
  const auto flags = static_cast<uint16_t>(((descriptor >> 52) & 0xF) << 12);  // AVL, L, D/B, G
  state.attributes = static_cast<uint16_t>(access | flags);
  return state;
}

void expect_same(const SegmentState& a, const SegmentState& b) {
  EXPECT_EQ(a.selector, b.selector);
  EXPECT_EQ(a.base, b.base);
  EXPECT_EQ(a.limit, b.limit);
  EXPECT_EQ(a.attributes, b.attributes) << std::hex << a.attributes << " vs " << b.attributes;
}

class BootTables : public ::testing::Test {
 protected:
  void SetUp() override {
    auto created = GuestMemory::create({{0, 1 << 20}});
    ASSERT_TRUE(created.has_value());
    memory_.emplace(std::move(*created));
    ASSERT_TRUE(write_boot_gdt(*memory_, kBootGdtAddress).has_value());
  }
  uint64_t descriptor(uint16_t selector) {
    return load_le<uint64_t>(memory_->host_pointer(kBootGdtAddress + selector, 8));
  }
  std::optional<GuestMemory> memory_;
};

// The hidden segment state a BootState hands the CPU core equals what loading each selector
// from the GDT in guest RAM would give, so a later reload by the guest changes nothing.
TEST_F(BootTables, LongModeStateMatchesTheGdtInRam) {
  const BootState state = long_mode_boot_state(kBootGdtAddress, kBootPageTablesAddress);
  expect_same(state.cs, decode(state.cs.selector, descriptor(state.cs.selector)));
  for (const SegmentState* data : {&state.ds, &state.es, &state.ss, &state.fs, &state.gs}) {
    expect_same(*data, decode(data->selector, descriptor(data->selector)));
  }
  EXPECT_NE(state.cs.attributes & (1 << 13), 0);  // L
  EXPECT_EQ(state.cs.attributes & (1 << 14), 0);  // D must be 0 with L
  EXPECT_EQ(state.gdt.limit, kBootGdtBytes - 1);
  EXPECT_EQ(descriptor(0), 0u);                   // null descriptor
}

TEST_F(BootTables, ProtectedModeStateMatchesTheGdtInRam) {
  const BootState state = protected_mode_boot_state(kBootGdtAddress);
  expect_same(state.cs, decode(state.cs.selector, descriptor(state.cs.selector)));
  expect_same(state.ss, decode(state.ss.selector, descriptor(state.ss.selector)));
  EXPECT_NE(state.cs.attributes & (1 << 14), 0);  // D: 32-bit
  EXPECT_EQ(state.cr0 & 0x80000000, 0u);
  EXPECT_EQ(state.efer, 0u);
}

TEST_F(BootTables, DescribeNamesTheEntryState) {
  BootState state = long_mode_boot_state(kBootGdtAddress, kBootPageTablesAddress);
  state.rip = 0x1000000;
  state.rsi = kBootParamsAddress;
  const std::string text = describe(state);
  EXPECT_NE(text.find("long mode"), std::string::npos) << text;
  EXPECT_NE(text.find("rip=0x1000000"), std::string::npos) << text;
  EXPECT_NE(text.find("rsi=0x8000"), std::string::npos) << text;
  EXPECT_NE(text.find("cs=0x10"), std::string::npos) << text;
}

}  // namespace
}  // namespace lamina::machine
