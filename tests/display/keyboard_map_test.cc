#include "display/keyboard_map.h"

#include <gtest/gtest.h>

namespace lamina::display {
namespace {

using Bytes = std::vector<uint8_t>;

TEST(KeyboardMapTest, LettersDigitsAndShiftedSymbolsUseTheirKeys) {
  EXPECT_EQ(set1_scancodes('a', true), Bytes{0x1e});
  EXPECT_EQ(set1_scancodes('A', true), Bytes{0x1e});
  EXPECT_EQ(set1_scancodes('a', false), Bytes{0x9e});
  EXPECT_EQ(set1_scancodes('1', true), Bytes{0x02});
  EXPECT_EQ(set1_scancodes('!', true), Bytes{0x02});
  EXPECT_EQ(set1_scancodes(' ', true), Bytes{0x39});
  EXPECT_EQ(set1_scancodes('?', true), Bytes{0x35});
}

TEST(KeyboardMapTest, ExtendedKeysCarryTheE0Prefix) {
  EXPECT_EQ(set1_scancodes(0xff54, true), (Bytes{0xe0, 0x50}));  // Down
  EXPECT_EQ(set1_scancodes(0xff54, false), (Bytes{0xe0, 0xd0}));
  EXPECT_EQ(set1_scancodes(0xff0d, true), Bytes{0x1c});          // Return
  EXPECT_EQ(set1_scancodes(0xffbe, true), Bytes{0x3b});          // F1
  EXPECT_EQ(set1_scancodes(0xffc9, true), Bytes{0x58});          // F12
  EXPECT_EQ(set1_scancodes(0xffe4, true), (Bytes{0xe0, 0x1d}));  // Control_R
}

TEST(KeyboardMapTest, KeysymsWithoutAKeyGiveNothing) {
  EXPECT_TRUE(set1_scancodes(0x20ac, true).empty());  // EuroSign
  EXPECT_TRUE(set1_scancodes(0, true).empty());
  EXPECT_TRUE(set1_scancodes(0xffffffff, true).empty());
}

}  // namespace
}  // namespace lamina::display
