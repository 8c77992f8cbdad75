#include "base/size.h"

#include <gtest/gtest.h>

namespace lamina {
namespace {

TEST(ParseSize, AcceptsPlainBytesAndBinarySuffixes) {
  EXPECT_EQ(parse_size("512").value(), 512u);
  EXPECT_EQ(parse_size("4K").value(), 4096u);
  EXPECT_EQ(parse_size("256M").value(), 256ull << 20);
  EXPECT_EQ(parse_size("256m").value(), 256ull << 20);
  EXPECT_EQ(parse_size("4G").value(), 4ull << 30);
  EXPECT_EQ(parse_size("2GiB").value(), 2ull << 30);
  EXPECT_EQ(parse_size("1T").value(), 1ull << 40);
  EXPECT_EQ(parse_size("7B").value(), 7u);
}

TEST(ParseSize, RejectsMalformedInputWithAMessageNamingIt) {
  for (const char* bad : {"", "M", "-1", "1.5G", "12X", "4 G", "G4"}) {
    auto result = parse_size(bad);
    ASSERT_FALSE(result.has_value()) << bad;
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(result.error().message().find("invalid size"), std::string::npos);
  }
}

TEST(ParseSize, RejectsOverflow) {
  EXPECT_FALSE(parse_size("99999999999999999999").has_value());
  EXPECT_FALSE(parse_size("17179869184G").has_value());
  EXPECT_TRUE(parse_size("16777215T").has_value());
}

TEST(FormatSize, UsesTheLargestExactUnit) {
  EXPECT_EQ(format_size(0), "0");
  EXPECT_EQ(format_size(1000), "1000");
  EXPECT_EQ(format_size(4096), "4K");
  EXPECT_EQ(format_size(256ull << 20), "256M");
  EXPECT_EQ(format_size((1ull << 30) + (1ull << 20)), "1025M");
  EXPECT_EQ(format_size(3ull << 40), "3T");
}

TEST(FormatSize, RoundTripsThroughParse) {
  for (uint64_t bytes : {1ull, 1024ull, 3ull << 20, 5ull << 30, 12345ull << 10}) {
    EXPECT_EQ(parse_size(format_size(bytes)).value(), bytes);
  }
}

}  // namespace
}  // namespace lamina
