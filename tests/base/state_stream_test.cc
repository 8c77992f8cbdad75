#include "base/state_stream.h"

#include <gtest/gtest.h>

namespace lamina {
namespace {

std::vector<std::byte> sample_stream() {
  StateWriter writer;
  writer.begin_section("outer", 3);
  writer.put_u8(0xab);
  writer.put_u16(0x1234);
  writer.put_u32(0xdeadbeef);
  writer.put_u64(0x0102030405060708);
  writer.put_bool(true);
  writer.begin_section("inner", 1);
  std::byte blob[3] = {std::byte{1}, std::byte{2}, std::byte{3}};
  writer.put_bytes(blob);
  writer.end_section();
  writer.end_section();
  EXPECT_TRUE(writer.complete());
  return writer.data();
}

TEST(StateStream, RoundTripsEveryType) {
  auto data = sample_stream();
  StateReader reader(data);
  ASSERT_EQ(reader.begin_section("outer").value(), 3u);
  EXPECT_EQ(reader.get_u8().value(), 0xab);
  EXPECT_EQ(reader.get_u16().value(), 0x1234);
  EXPECT_EQ(reader.get_u32().value(), 0xdeadbeefu);
  EXPECT_EQ(reader.get_u64().value(), 0x0102030405060708u);
  EXPECT_TRUE(reader.get_bool().value());
  ASSERT_EQ(reader.begin_section("inner").value(), 1u);
  std::byte blob[3];
  ASSERT_TRUE(reader.get_bytes(blob).has_value());
  EXPECT_EQ(blob[2], std::byte{3});
  ASSERT_TRUE(reader.end_section().has_value());
  ASSERT_TRUE(reader.end_section().has_value());
  EXPECT_TRUE(reader.at_end());
}

TEST(StateStream, IntegersAreLittleEndianWithAHeader) {
  StateWriter writer;
  writer.begin_section("ab", 7);
  writer.put_u32(0x11223344);
  writer.end_section();
  const auto& d = writer.data();
  // u16 name length, "ab", u32 version, u64 payload length, payload.
  ASSERT_EQ(d.size(), 2u + 2 + 4 + 8 + 4);
  EXPECT_EQ(d[0], std::byte{2});
  EXPECT_EQ(d[2], std::byte{'a'});
  EXPECT_EQ(d[4], std::byte{7});
  EXPECT_EQ(d[8], std::byte{4});
  EXPECT_EQ(d[16], std::byte{0x44});
  EXPECT_EQ(d[19], std::byte{0x11});
}

TEST(StateStream, VariadicPutAndGetMirrorEachOther) {
  StateWriter writer;
  writer.put(uint8_t{1}, uint16_t{2}, uint32_t{3}, uint64_t{4}, false);
  StateReader reader(writer.data());
  uint8_t a = 0;
  uint16_t b = 0;
  uint32_t c = 0;
  uint64_t d = 0;
  bool e = true;
  ASSERT_TRUE(reader.get(a, b, c, d, e).has_value());
  EXPECT_EQ(a + b + c + d, 10u);
  EXPECT_FALSE(e);
  EXPECT_TRUE(reader.at_end());
}

TEST(StateStream, EverySingleTruncationFailsCleanly) {
  auto data = sample_stream();
  for (size_t length = 0; length < data.size(); ++length) {
    StateReader reader(std::span<const std::byte>(data).first(length));
    bool failed = false;
    auto step = [&](auto result) {
      if (!failed && !result) {
        EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
        failed = true;
      }
    };
    step(reader.begin_section("outer"));
    if (!failed) step(reader.get_u8());
    if (!failed) step(reader.get_u16());
    if (!failed) step(reader.get_u32());
    if (!failed) step(reader.get_u64());
    if (!failed) step(reader.get_bool());
    if (!failed) step(reader.begin_section("inner"));
    std::byte blob[3];
    if (!failed) step(reader.get_bytes(blob));
    EXPECT_TRUE(failed) << "truncated to " << length << " bytes yet read everything";
  }
}

TEST(StateStream, ReadsCannotCrossTheSectionEnd) {
  StateWriter writer;
  writer.begin_section("a", 1);
  writer.put_u8(5);
  writer.end_section();
  writer.put_u32(99);
  StateReader reader(writer.data());
  ASSERT_TRUE(reader.begin_section("a").has_value());
  EXPECT_TRUE(reader.get_u8().has_value());
  // The next bytes exist in the stream but belong to no section member.
  EXPECT_FALSE(reader.get_u32().has_value());
  ASSERT_TRUE(reader.end_section().has_value());
  EXPECT_EQ(reader.get_u32().value(), 99u);
}

TEST(StateStream, EndSectionSkipsFieldsANewerWriterAppended) {
  StateWriter writer;
  writer.begin_section("dev", 2);
  writer.put_u8(1);
  writer.put_u64(42);  // a field this reader does not know
  writer.end_section();
  writer.put_u8(7);
  StateReader reader(writer.data());
  ASSERT_TRUE(reader.begin_section("dev").has_value());
  EXPECT_EQ(reader.get_u8().value(), 1);
  ASSERT_TRUE(reader.end_section().has_value());
  EXPECT_EQ(reader.get_u8().value(), 7);
}

TEST(StateStream, RejectsWrongNamesAndCorruptHeaders) {
  auto data = sample_stream();
  {
    StateReader reader(data);
    auto result = reader.begin_section("other");
    ASSERT_FALSE(result.has_value());
    EXPECT_NE(result.error().message().find("other"), std::string::npos);
  }
  {
    auto corrupt = data;
    corrupt[11] = std::byte{0xff};  // payload length far beyond the stream
    StateReader reader(corrupt);
    EXPECT_FALSE(reader.begin_section("outer").has_value());
  }
  {
    auto corrupt = data;
    corrupt[1] = std::byte{0xff};  // name length 0xff05
    StateReader reader(corrupt);
    EXPECT_FALSE(reader.begin_section("outer").has_value());
  }
}

TEST(StateStream, RejectsBadFlagsAndOversizedBlobs) {
  StateWriter writer;
  writer.put_u8(2);
  std::byte big[16] = {};
  writer.put_bytes(big);
  StateReader reader(writer.data());
  EXPECT_FALSE(reader.get_bool().has_value());
  EXPECT_FALSE(reader.get_blob(8).has_value());

  StateReader again(writer.data());
  ASSERT_TRUE(again.get_u8().has_value());
  std::byte small[4];
  EXPECT_FALSE(again.get_bytes(small).has_value());

  StateReader third(writer.data());
  ASSERT_TRUE(third.get_u8().has_value());
  EXPECT_EQ(third.get_blob(16).value().size(), 16u);
}

TEST(StateStream, EndSectionWithoutSectionIsAnError) {
  std::vector<std::byte> empty;
  StateReader reader(empty);
  EXPECT_FALSE(reader.end_section().has_value());
  EXPECT_TRUE(reader.at_end());
}

}  // namespace
}  // namespace lamina
