#include "machine/memory_layout.h"

#include <gtest/gtest.h>

#include "machine/boot_tables.h"

namespace lamina::machine {
namespace {

void expect_sorted_disjoint(const std::vector<E820Entry>& map) {
  for (size_t i = 1; i < map.size(); ++i) {
    EXPECT_LE(map[i - 1].address + map[i - 1].size, map[i].address) << "entry " << i;
  }
  for (const E820Entry& entry : map) EXPECT_GT(entry.size, 0u);
}

uint64_t usable_bytes(const std::vector<E820Entry>& map) {
  uint64_t total = 0;
  for (const E820Entry& entry : map) {
    if (entry.type == E820Type::kUsable) total += entry.size;
  }
  return total;
}

TEST(MemoryLayout, SmallGuestHasNoRamAbove4GiB) {
  auto layout = MemoryLayout::create({.ram_size = 512 * kMiB});
  ASSERT_TRUE(layout.has_value()) << layout.error().message();
  EXPECT_EQ(layout->below_4g_ram_end(), 512 * kMiB);
  EXPECT_EQ(layout->above_4g_ram_size(), 0u);
  const std::vector<RamRegion> regions = layout->ram_regions();
  ASSERT_EQ(regions.size(), 3u);
  EXPECT_EQ(regions[0].guest_physical, 0u);
  EXPECT_EQ(regions[0].size, 0xA0000u);
  EXPECT_EQ(regions[1].guest_physical, 0xC0000u);
  EXPECT_EQ(regions[2].guest_physical, 0x100000u);
  EXPECT_EQ(regions[2].size, 511 * kMiB);
  // The regions must be acceptable to GuestMemory as they are.
  EXPECT_TRUE(GuestMemory::create(regions).has_value());

  const std::vector<E820Entry> map = layout->e820();
  expect_sorted_disjoint(map);
  EXPECT_EQ(map.front(), (E820Entry{0, 0x9FC00, E820Type::kUsable}));
  // Usable = all RAM minus the EBDA KiB, the 640K-1M hole and the ACPI area.
  EXPECT_EQ(usable_bytes(map), 512 * kMiB - 0x400 - 0x60000 - kAcpiAreaSize);
  EXPECT_EQ(layout->acpi_area_base(), 512 * kMiB - kAcpiAreaSize);
}

TEST(MemoryLayout, LargeGuestSplitsAroundThePciHole) {
  auto layout = MemoryLayout::create({.ram_size = 6 * kGiB});
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->below_4g_ram_end(), 0xB0000000u);
  EXPECT_EQ(layout->above_4g_ram_size(), 6 * kGiB - 0xB0000000u);
  const std::vector<RamRegion> regions = layout->ram_regions();
  ASSERT_EQ(regions.size(), 4u);
  EXPECT_EQ(regions[3].guest_physical, 4 * kGiB);
  EXPECT_EQ(regions[3].size, 6 * kGiB - 0xB0000000u);

  const std::vector<E820Entry> map = layout->e820();
  expect_sorted_disjoint(map);
  auto find = [&](uint64_t address) -> const E820Entry* {
    for (const E820Entry& entry : map) {
      if (entry.address == address) return &entry;
    }
    return nullptr;
  };
  for (uint64_t mmio : {kEcamBase, kIoApicBase, kHpetBase, kLapicBase, 4 * kGiB - 256 * kKiB}) {
    const E820Entry* entry = find(mmio);
    ASSERT_NE(entry, nullptr) << std::hex << mmio;
    EXPECT_EQ(entry->type, E820Type::kReserved);
  }
  EXPECT_EQ(find(kEcamBase)->size, 256 * kMiB);
  EXPECT_EQ(find(layout->acpi_area_base())->type, E820Type::kAcpiReclaimable);
  EXPECT_EQ(map.back(), (E820Entry{4 * kGiB, 6 * kGiB - 0xB0000000u, E820Type::kUsable}));
  // No usable RAM overlaps the MMIO hole.
  for (const E820Entry& entry : map) {
    if (entry.type != E820Type::kUsable) continue;
    EXPECT_TRUE(entry.address + entry.size <= kPciHoleStart || entry.address >= 4 * kGiB);
  }
}

TEST(MemoryLayout, RejectsBadSizes) {
  EXPECT_FALSE(MemoryLayout::create({.ram_size = 0}).has_value());
  EXPECT_FALSE(MemoryLayout::create({.ram_size = 2 * kMiB}).has_value());
  EXPECT_FALSE(MemoryLayout::create({.ram_size = 64 * kMiB + 4096}).has_value());
  EXPECT_FALSE(MemoryLayout::create({.ram_size = kMaxRamSize + kMiB}).has_value());
  EXPECT_FALSE(MemoryLayout::create({.ram_size = 64 * kMiB, .firmware_rom_size = 3 * 65536})
                   .has_value());
  EXPECT_FALSE(MemoryLayout::create({.ram_size = 64 * kMiB, .firmware_rom_size = 32 * kMiB})
                   .has_value());
  auto error = MemoryLayout::create({.ram_size = 64 * kMiB + 1});
  ASSERT_FALSE(error.has_value());
  EXPECT_EQ(error.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(MemoryLayout::create({.ram_size = kMinRamSize}).has_value());
  EXPECT_TRUE(MemoryLayout::create({.ram_size = kMaxRamSize}).has_value());
}

TEST(MemoryLayout, BootDataFitsInConventionalMemory) {
  EXPECT_LE(kBootGdtAddress + kBootGdtBytes, kBootPageTablesAddress);
  EXPECT_LE(kBootPageTablesAddress + kBootPageTablesBytes, kBootParamsAddress);
  EXPECT_LE(kBootParamsAddress + 4096, kMultibootInfoAddress);
  EXPECT_LE(kMultibootInfoEnd, kCommandLineAddress);
  EXPECT_LE(kCommandLineAddress + kCommandLineMax, kBootStackTop - 64 * kKiB);
  EXPECT_LT(kBootStackTop, kEbdaStart);
}

TEST(FindHighestFree, PlacesHighAndAvoidsRanges) {
  const std::vector<E820Entry> map = {{0, 0x9FC00, E820Type::kUsable},
                                      {0x100000, 0x7F00000, E820Type::kUsable},
                                      {0x8000000, 0x10000, E820Type::kAcpiReclaimable}};
  auto top = find_highest_free(map, 0x100000, 4096, UINT64_MAX, {});
  ASSERT_TRUE(top.has_value());
  EXPECT_EQ(*top, 0x8000000u - 0x100000u);
  // Below a limit, aligned.
  auto limited = find_highest_free(map, 0x1000, 0x200000, 0x3000000 + 5, {});
  ASSERT_TRUE(limited.has_value());
  EXPECT_EQ(*limited, 0x2E00000u);
  // Avoiding the top 16 MiB pushes it below them.
  auto avoided = find_highest_free(map, 0x100000, 4096, UINT64_MAX, {{0x7000000, 0x1000000}});
  ASSERT_TRUE(avoided.has_value());
  EXPECT_EQ(*avoided, 0x6F00000u);
  // Too big for any usable entry.
  EXPECT_FALSE(find_highest_free(map, 0x8000000, 4096, UINT64_MAX, {}).has_value());
  // Everything avoided.
  EXPECT_FALSE(find_highest_free(map, 0x1000, 4096, UINT64_MAX, {{0, 0x10000000}}).has_value());
}

TEST(InUsableRam, ChecksWholeRangesAgainstUsableEntries) {
  const std::vector<E820Entry> map = {{0x100000, 0x100000, E820Type::kUsable},
                                      {0x200000, 0x1000, E820Type::kAcpiReclaimable}};
  EXPECT_TRUE(in_usable_ram(map, 0x100000, 0x100000));
  EXPECT_TRUE(in_usable_ram(map, 0x1FF000, 0x1000));
  EXPECT_FALSE(in_usable_ram(map, 0x1FF000, 0x1001));  // runs into the ACPI entry
  EXPECT_FALSE(in_usable_ram(map, 0x200000, 0x10));    // ACPI, not usable
  EXPECT_FALSE(in_usable_ram(map, 0xFF000, 0x2000));   // starts below
  EXPECT_FALSE(in_usable_ram(map, 0x100000, UINT64_MAX));
  EXPECT_FALSE(in_usable_ram(map, UINT64_MAX - 10, 100));
}

TEST(MemoryLayout, Pci64BitWindowLiesAboveRamAndBelow1TiB) {
  for (uint64_t ram : {64 * kMiB, 6 * kGiB, 510 * kGiB, kMaxRamSize}) {
    auto layout = MemoryLayout::create({.ram_size = ram});
    ASSERT_TRUE(layout.has_value());
    const uint64_t ram_top = 4 * kGiB + layout->above_4g_ram_size();
    EXPECT_GE(layout->pci_mmio64_base(), ram_top) << ram;
    EXPECT_EQ(layout->pci_mmio64_base() % kGiB, 0u);
    EXPECT_LE(layout->pci_mmio64_base() + layout->pci_mmio64_size(), uint64_t{1} << 40) << ram;
  }
}

}  // namespace
}  // namespace lamina::machine
