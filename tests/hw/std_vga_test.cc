#include "hw/display/std_vga.h"

#include <gtest/gtest.h>

#include <random>

#include "fakes.h"
#include "hw/display/std_vga_pci.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::read_register;
using testing::write_register;

class StdVgaTest : public ::testing::Test {
 protected:
  // Legacy ports by their absolute number.
  void port(uint16_t number, uint8_t value) { out8(vga.legacy_ports(), number - 0x3b0, value); }
  uint8_t port(uint16_t number) { return in8(vga.legacy_ports(), number - 0x3b0); }
  void sequencer(uint8_t index, uint8_t value) { port(0x3c4, index), port(0x3c5, value); }
  void graphics(uint8_t index, uint8_t value) { port(0x3ce, index), port(0x3cf, value); }
  void crtc(uint8_t index, uint8_t value) { port(0x3d4, index), port(0x3d5, value); }
  void attribute(uint8_t index, uint8_t value) {
    (void)port(0x3da);  // resets the index/data flip-flop
    port(0x3c0, index);
    port(0x3c0, value);
  }
  void dac(uint8_t index, uint8_t red, uint8_t green, uint8_t blue) {
    port(0x3c8, index);
    port(0x3c9, red), port(0x3c9, green), port(0x3c9, blue);
  }
  void dispi(uint16_t index, uint16_t value) {
    write_register(vga.dispi_ports(), 0, 2, index);
    write_register(vga.dispi_ports(), 1, 2, value);
  }
  uint16_t dispi(uint16_t index) {
    write_register(vga.dispi_ports(), 0, 2, index);
    return static_cast<uint16_t>(read_register(vga.dispi_ports(), 1, 2));
  }
  void memory(uint32_t offset, uint8_t value) { out8(vga.legacy_memory(), offset, value); }

  // Mode 3 as the VGA BIOS sets it, reduced to what the renderer reads: 80x25 characters of
  // 9x16, odd/even text at 0xB8000, font in plane 2.
  void text_mode() {
    sequencer(1, 0x00);  // 9-dot characters
    sequencer(2, 0x03);
    sequencer(3, 0x00);
    sequencer(4, 0x02);  // odd/even
    graphics(5, 0x10);
    graphics(6, 0x0e);  // text, window at 0xB8000
    graphics(8, 0xff);  // planar writes change every bit
    crtc(0x01, 79);
    crtc(0x07, 0x1f);  // vertical display end bit 8
    crtc(0x09, 0x0f);  // 16 scan lines per character
    crtc(0x12, 0x8f);  // 400 lines
    crtc(0x13, 40);
    crtc(0x0a, 0x20);  // no cursor
    for (uint8_t index = 0; index < 16; ++index) attribute(index, index);
    attribute(0x10, 0x0c);
    dac(0, 0, 0, 0);
    dac(7, 0x2a, 0x2a, 0x2a);
  }
  // Loads a glyph for `code`: plane 2 only, planar (not odd/even) access.
  void glyph(uint8_t code, std::array<uint8_t, 16> lines) {
    sequencer(2, 0x04);
    sequencer(4, 0x06);
    graphics(4, 0x02);
    graphics(5, 0x00);
    graphics(6, 0x04);  // window at 0xA0000, 64 KiB
    for (unsigned line = 0; line < 16; ++line) memory(code * 32u + line, lines[line]);
    sequencer(2, 0x03);
    sequencer(4, 0x02);
    graphics(4, 0x00);
    graphics(5, 0x10);
    graphics(6, 0x0e);
  }

  StdVga vga{uint64_t{1} << 20};
};

TEST_F(StdVgaTest, TextModeDrawsTheFontFromPlaneTwoAndReadsAsText) {
  text_mode();
  glyph('A', {0x00, 0x00, 0x10, 0x38, 0x6c, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0x00, 0x00,
              0x00, 0x00});
  // 'A' in light grey on black at row 0, column 1 (odd/even: character, then attribute).
  memory(0x18000 + 2, 'A');
  memory(0x18000 + 3, 0x07);
  Frame frame;
  ASSERT_TRUE(vga.render(frame));
  EXPECT_EQ(frame.width, 720u);
  EXPECT_EQ(frame.height, 400u);
  EXPECT_EQ(frame.text.substr(0, 3), " A ");
  EXPECT_EQ(std::count(frame.text.begin(), frame.text.end(), '\n'), 25);
  // Line 7 of the glyph is 0xFE: dots 0-6 lit in the second cell (x 9..15).
  const uint32_t grey = 0xaaaaaa;
  for (unsigned dot = 0; dot < 9; ++dot) {
    EXPECT_EQ(frame.pixels[7 * 720 + 9 + dot], dot < 7 ? grey : 0u) << dot;
  }
  EXPECT_EQ(frame.pixels[0], 0u);
}

TEST_F(StdVgaTest, DispiLinearModesRenderEachDepth) {
  struct Case {
    uint16_t bpp;
    std::vector<uint8_t> bytes;  // one pixel in memory order
    uint32_t expected;
  };
  dac(5, 0x3f, 0x00, 0x3f);
  const Case cases[] = {
      {32, {0x33, 0x22, 0x11, 0x00}, 0x112233},
      {24, {0x33, 0x22, 0x11}, 0x112233},
      {16, {0x1f, 0xf8}, 0xff0000 | 0x00ff},  // red 31, green 0 ... blue 31 (0xf81f)
      {15, {0x00, 0x7c}, 0xff0000},
      {8, {0x05}, 0xff00ff},
  };
  for (const Case& test : cases) {
    dispi(dispi::kIndexEnable, 0);
    dispi(dispi::kIndexXres, 16);
    dispi(dispi::kIndexYres, 8);
    dispi(dispi::kIndexBpp, test.bpp);
    dispi(dispi::kIndexEnable, dispi::kEnabled | dispi::kLfbEnabled);
    const uint64_t pixel = (3 * 16 + 2) * test.bytes.size();  // (2, 3)
    for (size_t index = 0; index < test.bytes.size(); ++index) {
      write_register(vga.framebuffer(), pixel + index, 1, test.bytes[index]);
    }
    Frame frame;
    ASSERT_TRUE(vga.render(frame)) << test.bpp;
    ASSERT_EQ(frame.width, 16u);
    ASSERT_EQ(frame.height, 8u);
    EXPECT_EQ(frame.pixels[3 * 16 + 2], test.expected) << test.bpp;
    EXPECT_EQ(frame.pixels[0], 0u) << test.bpp;  // cleared by the mode set
  }
}

TEST_F(StdVgaTest, DispiReportsCapabilitiesAndVideoMemory) {
  EXPECT_EQ(dispi(dispi::kIndexId), dispi::kId5);
  dispi(dispi::kIndexId, 0x1234);  // not a DISPI version: ignored
  EXPECT_EQ(dispi(dispi::kIndexId), dispi::kId5);
  EXPECT_EQ(dispi(dispi::kIndexVideoMemory64k), 16);  // 1 MiB
  dispi(dispi::kIndexEnable, dispi::kGetCaps);
  EXPECT_EQ(dispi(dispi::kIndexXres), dispi::kMaxXres);
  EXPECT_EQ(dispi(dispi::kIndexBpp), dispi::kMaxBpp);
}

TEST_F(StdVgaTest, BankedWindowReachesTheFramebuffer) {
  dispi(dispi::kIndexXres, 640);
  dispi(dispi::kIndexYres, 480);
  dispi(dispi::kIndexBpp, 8);
  dispi(dispi::kIndexEnable, dispi::kEnabled);
  dispi(dispi::kIndexBank, 2);
  memory(0x10, 0x5a);
  EXPECT_EQ(read_register(vga.framebuffer(), 2 * 0x10000 + 0x10, 1), 0x5au);
  // A bank past video memory reads all ones and writes nothing.
  dispi(dispi::kIndexBank, 0xffff);
  memory(0x10, 0x77);
  EXPECT_EQ(in8(vga.legacy_memory(), 0x10), 0xff);
}

// Every register a guest controls at its most hostile: rendering and memory accesses stay in
// video memory (the sanitizers and the frame-size checks would see anything else).
TEST_F(StdVgaTest, HostileRegisterValuesStayInsideVideoMemory) {
  std::mt19937 random(15);
  const uint16_t extremes[] = {0, 1, 7, 8, 15, 16, 24, 32, 0x7fff, 0x8000, 0xfffe, 0xffff};
  for (int round = 0; round < 400; ++round) {
    auto pick = [&] { return extremes[random() % std::size(extremes)]; };
    dispi(dispi::kIndexEnable, 0);
    dispi(dispi::kIndexXres, pick());
    dispi(dispi::kIndexYres, pick());
    dispi(dispi::kIndexBpp, pick());
    dispi(dispi::kIndexEnable, static_cast<uint16_t>(random() & 0xff));
    dispi(dispi::kIndexVirtWidth, pick());
    dispi(dispi::kIndexXOffset, pick());
    dispi(dispi::kIndexYOffset, pick());
    dispi(dispi::kIndexBank, pick());
    dispi(static_cast<uint16_t>(random()), pick());  // any index
    for (uint8_t index = 0; index < 0x20; ++index) {
      crtc(index, static_cast<uint8_t>(random()));
      sequencer(index, static_cast<uint8_t>(random()));
      graphics(index, static_cast<uint8_t>(random()));
      attribute(index, static_cast<uint8_t>(random()));
    }
    for (uint16_t number = 0x3b0; number < 0x3e0; ++number) {
      port(number, static_cast<uint8_t>(random()));
      (void)port(number);
    }
    for (uint32_t offset : {0u, 0xffffu, 0x10000u, 0x17fffu, 0x18000u, 0x1ffffu}) {
      memory(offset, static_cast<uint8_t>(random()));
      (void)in8(vga.legacy_memory(), offset);
    }
    // Framebuffer accesses at and across its end.
    write_register(vga.framebuffer(), vga.video_memory() - 4, 8, ~0ull);
    EXPECT_EQ(read_register(vga.framebuffer(), vga.video_memory() - 4, 8), ~0ull);
    EXPECT_EQ(read_register(vga.framebuffer(), vga.video_memory(), 1), 0xffu);
    Frame frame;
    if (vga.render(frame)) {
      EXPECT_EQ(frame.pixels.size(), size_t{frame.width} * frame.height);
      EXPECT_LE(uint64_t{frame.width} * frame.height, StdVga::kMaxFramePixels);
    } else {
      EXPECT_EQ(frame.width, 0u);
    }
  }
}

TEST_F(StdVgaTest, SaveAndLoadKeepTheScreen) {
  text_mode();
  glyph('A', {0x00, 0x00, 0x10, 0x38, 0x6c, 0xc6, 0xc6, 0xfe, 0xc6, 0xc6, 0xc6, 0xc6, 0x00, 0x00,
              0x00, 0x00});
  memory(0x18000, 'A');
  memory(0x18001, 0x07);
  dispi(dispi::kIndexXres, 800);
  Frame before;
  ASSERT_TRUE(vga.render(before));
  StateWriter writer;
  vga.save(writer);
  StdVga restored{uint64_t{1} << 20};
  StateReader reader(writer.data());
  ASSERT_TRUE(restored.load(reader));
  EXPECT_TRUE(reader.at_end());
  Frame after;
  ASSERT_TRUE(restored.render(after));
  EXPECT_EQ(after.pixels, before.pixels);
  EXPECT_EQ(after.text, before.text);
  // A truncated state is an error, not a crash.
  std::vector<std::byte> cut(writer.data().begin(), writer.data().begin() + 100);
  StateReader short_reader(cut);
  EXPECT_FALSE(restored.load(short_reader));
}

TEST(StdVgaPciTest, IdentifiesAsTheBochsStandardVga) {
  StdVgaPci function;
  EXPECT_EQ(function.config_read(0x00, 4), 0x11111234u);
  EXPECT_EQ(function.config_read(0x08, 4) >> 8, 0x030000u);
  // BAR0: 16 MiB prefetchable memory; BAR2: 4 KiB of registers.
  function.config_write(0x10, 4, 0xffffffff);
  EXPECT_EQ(function.config_read(0x10, 4), 0xff000008u);
  function.config_write(0x18, 4, 0xffffffff);
  EXPECT_EQ(function.config_read(0x18, 4), 0xfffff000u);
}

TEST(StdVgaMmioTest, Bar2ReachesTheVgaPortsAndDispiRegisters) {
  StdVga vga;
  // DISPI register 1 (XRES) at 0x500 + 2.
  write_register(vga.mmio(), 0x502, 2, 800);
  EXPECT_EQ(read_register(vga.mmio(), 0x502, 2), 800u);
  // VGA port 0x3c4/0x3c5 at 0x404/0x405.
  write_register(vga.mmio(), 0x404, 2, 0x0f02);
  EXPECT_EQ(read_register(vga.mmio(), 0x405, 1), 0x0fu);
  // No EDID, no QEMU extended registers.
  EXPECT_EQ(read_register(vga.mmio(), 0x600, 4), 0u);
}

}  // namespace
}  // namespace lamina::hw
