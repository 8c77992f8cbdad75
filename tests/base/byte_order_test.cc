#include "base/byte_order.h"

#include <gtest/gtest.h>

#include <array>

namespace lamina {
namespace {

TEST(ByteOrder, BigEndianMatchesTheWireLayout) {
  std::array<uint8_t, 8> bytes{};
  store_be<uint32_t>(bytes.data(), 0x636f6e65);  // "cone", the start of the VHD cookie
  EXPECT_EQ(bytes[0], 'c');
  EXPECT_EQ(bytes[3], 'e');
  EXPECT_EQ(load_be<uint32_t>(bytes.data()), 0x636f6e65u);
  store_be<uint64_t>(bytes.data(), 0x0102030405060708ull);
  EXPECT_EQ(bytes[0], 1);
  EXPECT_EQ(bytes[7], 8);
}

TEST(ByteOrder, LittleEndianUnaligned) {
  std::array<uint8_t, 9> bytes{};
  store_le<uint64_t>(bytes.data() + 1, 0x1122334455667788ull);
  EXPECT_EQ(bytes[1], 0x88);
  EXPECT_EQ(bytes[8], 0x11);
  EXPECT_EQ(load_le<uint64_t>(bytes.data() + 1), 0x1122334455667788ull);
  EXPECT_EQ(load_le<uint16_t>(bytes.data() + 1), 0x7788);
}

TEST(ByteOrder, SizedAccessForDeviceRegisters) {
  std::array<std::byte, 4> register_bytes{};
  store_le_sized(register_bytes, 0xdeadbeef);
  EXPECT_EQ(load_le_sized(register_bytes), 0xdeadbeefu);
  std::span<std::byte> low_two(register_bytes.data(), 2);
  store_le_sized(low_two, 0x12345678);
  EXPECT_EQ(load_le_sized(register_bytes), 0xdead5678u);
}

}  // namespace
}  // namespace lamina
