#include "base/guest_memory.h"

#include <gtest/gtest.h>

#include <array>

namespace lamina {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

TEST(GuestMemory, ReadsBackWhatWasWrittenInEachRegion) {
  auto memory = GuestMemory::create({{0, 2 * kMiB}, {4ull << 30, kMiB}});
  ASSERT_TRUE(memory.has_value()) << memory.error().message();
  std::array<std::byte, 4> pattern{std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}};
  for (uint64_t address : {uint64_t{0}, 2 * kMiB - 4, uint64_t{(4ull << 30) + 100}}) {
    ASSERT_TRUE(memory->write(address, pattern).has_value());
    std::array<std::byte, 4> back{};
    ASSERT_TRUE(memory->read(address, back).has_value());
    EXPECT_EQ(back, pattern);
  }
  EXPECT_EQ(memory->total_size(), 3 * kMiB);
}

TEST(GuestMemory, RejectsRangesOutsideOrAcrossRam) {
  auto memory = GuestMemory::create({{0, kMiB}, {2 * kMiB, kMiB}});
  ASSERT_TRUE(memory.has_value());
  std::array<std::byte, 8> buffer{};
  EXPECT_FALSE(memory->read(kMiB - 4, buffer).has_value());      // runs into the hole
  EXPECT_FALSE(memory->read(kMiB + 16, buffer).has_value());     // in the hole
  EXPECT_FALSE(memory->read(3 * kMiB - 4, buffer).has_value());  // runs past the end
  EXPECT_EQ(memory->host_pointer(UINT64_MAX - 2, 8), nullptr);   // wraps around
  EXPECT_EQ(memory->host_pointer(0, UINT64_MAX), nullptr);
  EXPECT_NE(memory->host_pointer(kMiB - 8, 8), nullptr);
  auto error = memory->write(5 * kMiB, buffer);
  ASSERT_FALSE(error.has_value());
  EXPECT_NE(error.error().message().find("0x500000"), std::string::npos);
}

TEST(GuestMemory, RejectsBadLayouts) {
  EXPECT_FALSE(GuestMemory::create({{0, 0}}).has_value());
  EXPECT_FALSE(GuestMemory::create({{0, 1000}}).has_value());
  EXPECT_FALSE(GuestMemory::create({{0, 2 * kMiB}, {kMiB, kMiB}}).has_value());
  EXPECT_FALSE(GuestMemory::create({{UINT64_MAX - 4095, 8192}}).has_value());
}

TEST(GuestMemory, MoveTransfersOwnership) {
  auto memory = GuestMemory::create({{0, kMiB}});
  ASSERT_TRUE(memory.has_value());
  GuestMemory moved = std::move(*memory);
  EXPECT_NE(moved.host_pointer(0, 1), nullptr);
  EXPECT_EQ(memory->host_pointer(0, 1), nullptr);
}

}  // namespace
}  // namespace lamina
