#include "hw/bus.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

#include "fakes.h"

namespace lamina::hw {
namespace {

using testing::read_register;
using testing::write_register;

// Remembers the last access so tests can check offsets and sizes.
class ProbeDevice final : public Device {
 public:
  explicit ProbeDevice(std::string name) : name_(std::move(name)) {}
  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<std::byte> data) override {
    last_offset = offset;
    last_size = data.size();
    store_le_sized(data, 0x1000 + offset);
    ++reads;
  }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    last_offset = offset;
    last_size = data.size();
    last_value = load_le_sized(data);
    ++writes;
  }
  uint64_t last_offset = ~0ull;
  size_t last_size = 0;
  uint64_t last_value = 0;
  int reads = 0;
  int writes = 0;

 private:
  std::string name_;
};

TEST(Bus, DispatchesWithTheOffsetInsideTheRange) {
  Bus bus("io", 0xffff);
  ProbeDevice device("probe");
  ASSERT_TRUE(bus.map(0x3f8, 8, device).has_value());
  std::byte data[2];
  EXPECT_TRUE(bus.read(0x3fd, data));
  EXPECT_EQ(device.last_offset, 5u);
  EXPECT_EQ(device.last_size, 2u);
  EXPECT_EQ(load_le_sized(data), 0x1005u);
  std::byte value[1] = {std::byte{0x5a}};
  EXPECT_TRUE(bus.write(0x3f8, value));
  EXPECT_EQ(device.last_offset, 0u);
  EXPECT_EQ(device.last_value, 0x5au);
}

TEST(Bus, UnmappedReadsAreAllOnesAndWritesAreCounted) {
  Bus bus("io", 0xffff);
  ProbeDevice device("probe");
  ASSERT_TRUE(bus.map(0x60, 1, device).has_value());
  std::byte data[4] = {};
  EXPECT_FALSE(bus.read(0x61, data));
  for (std::byte b : data) EXPECT_EQ(b, std::byte{0xff});
  std::byte value[1] = {};
  EXPECT_FALSE(bus.write(0x5f, value));
  EXPECT_FALSE(bus.write(0x1234, value));
  EXPECT_EQ(bus.unmapped_reads(), 1u);
  EXPECT_EQ(bus.unmapped_writes(), 2u);
  EXPECT_EQ(device.reads + device.writes, 0);
}

TEST(Bus, AnAccessStraddlingTheRangeEndIsUnmapped) {
  Bus bus("io", 0xffff);
  ProbeDevice device("probe");
  ASSERT_TRUE(bus.map(0x70, 2, device).has_value());
  std::byte data[4];
  EXPECT_FALSE(bus.read(0x71, std::span(data, 2)));
  EXPECT_TRUE(bus.read(0x70, std::span(data, 2)));
  EXPECT_EQ(device.reads, 1);
}

TEST(Bus, RejectsZeroSizeOverflowAndOverlap) {
  Bus io("io", 0xffff);
  ProbeDevice a("a"), b("b");
  EXPECT_EQ(io.map(0x10, 0, a).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(io.map(0xfff0, 0x20, a).has_value());  // passes the 16-bit space
  EXPECT_FALSE(io.map(0x10000, 1, a).has_value());
  EXPECT_TRUE(io.map(0xffff, 1, a).has_value());  // the very last port is fine

  ASSERT_TRUE(io.map(0x100, 0x10, b).has_value());
  auto overlap = io.map(0x10f, 1, a);
  ASSERT_FALSE(overlap.has_value());
  EXPECT_NE(overlap.error().message().find("b"), std::string::npos);
  EXPECT_FALSE(io.map(0xf8, 0x10, a).has_value());   // covers the start of b
  EXPECT_FALSE(io.map(0x104, 2, a).has_value());     // inside b
  EXPECT_FALSE(io.map(0xf0, 0x100, a).has_value());  // encloses b
  EXPECT_TRUE(io.map(0x110, 1, a).has_value());      // adjacent after
  EXPECT_TRUE(io.map(0xff, 1, a).has_value());       // adjacent before

  Bus mmio("mmio");
  EXPECT_FALSE(mmio.map(UINT64_MAX - 0xf, 0x20, a).has_value());  // wraps
  EXPECT_TRUE(mmio.map(UINT64_MAX - 0xf, 0x10, a).has_value());   // ends at the top
  std::byte data[8];
  EXPECT_TRUE(mmio.read(UINT64_MAX - 7, data));
  EXPECT_EQ(a.last_offset, 8u);
  EXPECT_FALSE(mmio.read(UINT64_MAX - 3, data));  // would wrap past the top
}

TEST(Bus, UnmapFreesTheRangeForANewMapping) {
  Bus bus("mmio");
  ProbeDevice a("a"), b("b");
  ASSERT_TRUE(bus.map(0x1000, 0x1000, a).has_value());
  EXPECT_EQ(bus.unmap(0x1800).error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(bus.unmap(0x1000).has_value());
  EXPECT_EQ(bus.find(0x1000), nullptr);
  ASSERT_TRUE(bus.map(0x1800, 0x1000, b).has_value());
  EXPECT_EQ(bus.find(0x2000), &b);
}

// A device that remaps itself from inside an access, as a PCI config write does.
class RemappingDevice final : public Device {
 public:
  explicit RemappingDevice(Bus& bus) : bus_(bus) {}
  std::string_view name() const override { return "remapper"; }
  void read(uint64_t, std::span<std::byte> data) override { store_le_sized(data, 0); }
  void write(uint64_t, std::span<const std::byte> data) override {
    moved = bus_.unmap(0x100).has_value() && bus_.map(load_le_sized(data), 0x10, *this).has_value();
  }
  bool moved = false;

 private:
  Bus& bus_;
};

TEST(Bus, ADeviceMayRemapFromInsideAnAccess) {
  Bus bus("mmio");
  RemappingDevice device(bus);
  ASSERT_TRUE(bus.map(0x100, 0x10, device).has_value());
  std::byte value[4];
  store_le_sized(value, 0x2000);
  ASSERT_TRUE(bus.write(0x100, value));
  EXPECT_TRUE(device.moved);
  EXPECT_EQ(bus.find(0x2000), &device);
  EXPECT_EQ(bus.find(0x100), nullptr);
}

TEST(Bus, ConcurrentAccessesWhileMapping) {
  Bus bus("mmio");
  ProbeDevice fixed("fixed"), moving("moving");
  ASSERT_TRUE(bus.map(0, 0x10, fixed).has_value());
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    std::byte data[4];
    while (!stop) EXPECT_TRUE(bus.read(4, data));
  });
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(bus.map(0x1000, 0x10, moving).has_value());
    ASSERT_TRUE(bus.unmap(0x1000).has_value());
  }
  stop = true;
  reader.join();
}

}  // namespace
}  // namespace lamina::hw
