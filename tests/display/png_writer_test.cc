#include "display/png_writer.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>

namespace lamina::display {
namespace {

uint32_t be32(const std::byte* bytes) {
  uint32_t value = 0;
  for (int index = 0; index < 4; ++index)
    value = value << 8 | std::to_integer<uint32_t>(bytes[index]);
  return value;
}

// Walks the chunks (checking each CRC with zlib) and inflates IDAT: an independent decoder.
struct Decoded {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> raw;
  std::vector<std::string> chunks;
};
Decoded decode(const std::vector<std::byte>& png) {
  Decoded decoded;
  static constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  EXPECT_EQ(std::memcmp(png.data(), kSignature, 8), 0);
  std::vector<uint8_t> idat;
  for (size_t pos = 8; pos + 12 <= png.size();) {
    const uint32_t length = be32(&png[pos]);
    const std::string type(reinterpret_cast<const char*>(&png[pos + 4]), 4);
    const auto* body = reinterpret_cast<const Bytef*>(&png[pos + 8]);
    const uLong crc = ::crc32(0, reinterpret_cast<const Bytef*>(&png[pos + 4]), length + 4);
    EXPECT_EQ(be32(&png[pos + 8 + length]), crc) << type;
    decoded.chunks.push_back(type);
    if (type == "IHDR") {
      decoded.width = be32(&png[pos + 8]);
      decoded.height = be32(&png[pos + 12]);
      EXPECT_EQ(body[8], 8);  // bit depth
      EXPECT_EQ(body[9], 2);  // RGB
    }
    if (type == "IDAT") idat.insert(idat.end(), body, body + length);
    pos += 12 + length;
  }
  decoded.raw.resize(size_t{decoded.width * 3 + 1} * decoded.height);
  uLongf size = decoded.raw.size();
  EXPECT_EQ(::uncompress(decoded.raw.data(), &size, idat.data(), idat.size()), Z_OK);
  EXPECT_EQ(size, decoded.raw.size());
  return decoded;
}

TEST(PngWriterTest, EncodesEveryPixelAsRgbRows) {
  hw::Frame frame;
  frame.resize(7, 3);
  for (size_t index = 0; index < frame.pixels.size(); ++index) {
    frame.pixels[index] = static_cast<uint32_t>(index * 0x010203 + 0x405060);
  }
  auto png = encode_png(frame);
  ASSERT_TRUE(png) << png.error().message();
  const Decoded decoded = decode(*png);
  EXPECT_EQ(decoded.chunks, (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
  ASSERT_EQ(decoded.width, 7u);
  ASSERT_EQ(decoded.height, 3u);
  for (uint32_t y = 0; y < 3; ++y) {
    EXPECT_EQ(decoded.raw[y * 22], 0) << "filter type None";
    for (uint32_t x = 0; x < 7; ++x) {
      const uint32_t pixel = frame.pixels[y * 7 + x];
      const uint8_t* rgb = &decoded.raw[y * 22 + 1 + x * 3];
      EXPECT_EQ(rgb[0], (pixel >> 16) & 0xff);
      EXPECT_EQ(rgb[1], (pixel >> 8) & 0xff);
      EXPECT_EQ(rgb[2], pixel & 0xff);
    }
  }
}

TEST(PngWriterTest, RefusesAFrameWithoutPixels) {
  hw::Frame empty;
  EXPECT_FALSE(encode_png(empty));
  hw::Frame inconsistent;
  inconsistent.width = 4;
  inconsistent.height = 4;
  inconsistent.pixels.resize(3);
  EXPECT_FALSE(encode_png(inconsistent));
}

}  // namespace
}  // namespace lamina::display
