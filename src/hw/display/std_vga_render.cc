// StdVga's renderer: the current mode drawn into a Frame (see std_vga.h).
#include <algorithm>

#include "hw/display/std_vga.h"

namespace lamina::hw {
namespace {

constexpr unsigned kMaxTextColumns = 160;
constexpr unsigned kMaxTextRows = 100;
constexpr unsigned kPlaneSize = 0x10000;

// Text for a code page 437 byte: ASCII as is, the box-drawing characters bootloader menus draw
// as ASCII look-alikes, anything else as '.' (a blank for NUL, which cleared screens hold).
char text_of(uint8_t code) {
  if (code >= 0x20 && code < 0x7f) return static_cast<char>(code);
  if (code == 0) return ' ';
  switch (code) {
    case 0xb3:
    case 0xba: return '|';
    case 0xc4:
    case 0xcd: return '-';
    case 0xda:
    case 0xbf:
    case 0xc0:
    case 0xd9:
    case 0xc9:
    case 0xbb:
    case 0xc8:
    case 0xbc:
    case 0xc3:
    case 0xb4:
    case 0xc2:
    case 0xc1:
    case 0xc5:
    case 0xcc:
    case 0xb9:
    case 0xcb:
    case 0xca:
    case 0xce: return '+';
    default: return '.';
  }
}

}  // namespace

uint32_t StdVga::palette_color(uint8_t index) const {
  index &= dac_mask_;
  uint32_t red = dac_[index * 3u];
  uint32_t green = dac_[index * 3u + 1];
  uint32_t blue = dac_[index * 3u + 2];
  if ((dispi_[dispi::kIndexEnable] & dispi::kEightBitDac) == 0) {
    // 6-bit DAC values scaled to 8 bits.
    auto scale = [](uint32_t value) { return ((value & 0x3f) << 2) | ((value & 0x3f) >> 4); };
    red = scale(red);
    green = scale(green);
    blue = scale(blue);
  }
  return (red << 16) | (green << 8) | blue;
}

uint8_t StdVga::attribute_color(uint8_t color) const {
  const uint8_t entry = attribute_[color & 0x0f];
  uint8_t index = entry & 0x3f;
  // Attribute Mode Control bit 7: bits 5-4 come from Color Select bits 1-0.
  if (attribute_[vga::kArModeControl] & 0x80) {
    index = static_cast<uint8_t>((entry & 0x0f) | ((attribute_[vga::kArColorSelect] & 3) << 4));
  }
  return static_cast<uint8_t>(index | ((attribute_[vga::kArColorSelect] & 0x0c) << 4));
}

uint32_t StdVga::vertical_display_lines() const {
  // CRTC Vertical Display End, bits 8 and 9 in the Overflow register.
  const uint32_t end = crtc_[0x12] | ((crtc_[7] & 0x02) << 7) | ((crtc_[7] & 0x40) << 3);
  return end + 1;
}

bool StdVga::render(Frame& frame) const {
  std::lock_guard lock(mutex_);
  frame.text.clear();
  bool drawn = false;
  if (dispi_enabled()) {
    drawn = render_dispi(frame);
  } else if ((graphics_[vga::kGrMisc] & 0x01) == 0) {
    drawn = render_text(frame);
  } else if (graphics_[vga::kGrMode] & 0x40) {
    drawn = render_chain4(frame);
  } else {
    drawn = render_planar(frame);
  }
  if (!drawn) frame.resize(0, 0);
  return drawn;
}

bool StdVga::render_text(Frame& frame) const {
  const unsigned columns = crtc_[1] + 1u;
  const unsigned char_height = (crtc_[9] & 0x1f) + 1u;
  const unsigned char_width = (sequencer_[1] & 0x01) ? 8 : 9;
  const unsigned rows = vertical_display_lines() / char_height;
  if (columns > kMaxTextColumns || rows == 0 || rows > kMaxTextRows) return false;
  const unsigned start = (crtc_[0x0c] << 8) | crtc_[0x0d];
  const unsigned stride = crtc_[0x13] ? crtc_[0x13] * 2u : columns;
  // Character Map Select (sequencer register 3): maps A and B, 8 KiB apart in plane 2.
  const uint8_t map_select = sequencer_[3];
  auto font_offset = [](unsigned map) { return (map & 3) * 0x4000u + ((map >> 2) & 1) * 0x2000u; };
  const unsigned font_a = font_offset(((map_select >> 2) & 3) | ((map_select >> 3) & 4));
  const unsigned font_b = font_offset((map_select & 3) | ((map_select >> 2) & 4));
  const bool line_graphics = (attribute_[vga::kArModeControl] & 0x04) != 0;
  const bool blink = (attribute_[vga::kArModeControl] & 0x08) != 0;
  const bool cursor_on = (crtc_[0x0a] & 0x20) == 0;
  const unsigned cursor = ((crtc_[0x0e] << 8) | crtc_[0x0f]) - start;
  const unsigned cursor_first = crtc_[0x0a] & 0x1f;
  const unsigned cursor_last = crtc_[0x0b] & 0x1f;

  frame.resize(columns * char_width, rows * char_height);
  frame.text.reserve(static_cast<size_t>(rows) * (columns + 1));
  for (unsigned row = 0; row < rows; ++row) {
    for (unsigned column = 0; column < columns; ++column) {
      const unsigned cell = row * stride + column;
      const size_t offset = ((start + cell) % kPlaneSize) * 4;
      const uint8_t code = vram_[offset];
      const uint8_t attribute = vram_[offset + 1];
      frame.text.push_back(text_of(code));
      const uint32_t foreground = palette_color(attribute_color(attribute & 0x0f));
      const uint32_t background =
          palette_color(attribute_color(blink ? (attribute >> 4) & 7 : attribute >> 4));
      const unsigned font = (attribute & 0x08) ? font_a : font_b;
      for (unsigned line = 0; line < char_height; ++line) {
        const uint8_t bits = vram_[((font + code * 32u + line) % kPlaneSize) * 4 + 2];
        const bool in_cursor =
            cursor_on && cell == cursor && line >= cursor_first && line <= cursor_last;
        uint32_t* pixel = &frame.pixels[(size_t{row} * char_height + line) * frame.width +
                                        size_t{column} * char_width];
        for (unsigned dot = 0; dot < char_width; ++dot) {
          bool on;
          if (dot < 8) {
            on = (bits >> (7 - dot)) & 1;
          } else {
            // The ninth dot repeats the eighth for the line-drawing characters 0xC0-0xDF.
            on = line_graphics && code >= 0xc0 && code <= 0xdf && (bits & 1);
          }
          pixel[dot] = (on || in_cursor) ? foreground : background;
        }
      }
    }
    frame.text.push_back('\n');
  }
  return true;
}

bool StdVga::render_dispi(Frame& frame) const {
  const uint32_t width = dispi_[dispi::kIndexXres];
  const uint32_t height = dispi_[dispi::kIndexYres];
  const uint32_t bpp = dispi_[dispi::kIndexBpp];
  if (width == 0 || height == 0 || width > dispi::kMaxXres || height > dispi::kMaxYres) {
    return false;
  }
  if (bpp != 8 && bpp != 15 && bpp != 16 && bpp != 24 && bpp != 32) return false;
  const uint64_t bytes_per_pixel = (bpp + 7) / 8;
  const uint64_t stride =
      uint64_t{std::max<uint32_t>(dispi_[dispi::kIndexVirtWidth], width)} * bytes_per_pixel;
  const uint64_t start = uint64_t{dispi_[dispi::kIndexYOffset]} * stride +
                         uint64_t{dispi_[dispi::kIndexXOffset]} * bytes_per_pixel;
  frame.resize(width, height);
  for (uint32_t y = 0; y < height; ++y) {
    const uint64_t line = start + y * stride;
    // Pixels past the end of video memory stay black.
    if (line >= vram_.size()) break;
    const uint32_t visible =
        static_cast<uint32_t>(std::min<uint64_t>(width, (vram_.size() - line) / bytes_per_pixel));
    const uint8_t* source = vram_.data() + line;
    uint32_t* target = &frame.pixels[size_t{y} * width];
    for (uint32_t x = 0; x < visible; ++x, source += bytes_per_pixel) {
      switch (bpp) {
        case 8: target[x] = palette_color(source[0]); break;
        case 15: {
          const uint32_t value = source[0] | (source[1] << 8);
          const uint32_t red = (value >> 10) & 0x1f, green = (value >> 5) & 0x1f,
                         blue = value & 0x1f;
          target[x] = ((red << 3 | red >> 2) << 16) | ((green << 3 | green >> 2) << 8) |
                      (blue << 3 | blue >> 2);
          break;
        }
        case 16: {
          const uint32_t value = source[0] | (source[1] << 8);
          const uint32_t red = (value >> 11) & 0x1f, green = (value >> 5) & 0x3f,
                         blue = value & 0x1f;
          target[x] = ((red << 3 | red >> 2) << 16) | ((green << 2 | green >> 4) << 8) |
                      (blue << 3 | blue >> 2);
          break;
        }
        default:  // 24 and 32: blue, green, red in memory order
          target[x] = (uint32_t{source[2]} << 16) | (uint32_t{source[1]} << 8) | source[0];
          break;
      }
    }
  }
  return true;
}

bool StdVga::render_chain4(Frame& frame) const {
  // 256 colours, one byte per pixel (mode 13h); CRTC Maximum Scan Line bit 7 and bits 4-0 repeat
  // each line.
  const uint32_t width = (crtc_[1] + 1u) * 4;
  const uint32_t repeat = ((crtc_[9] & 0x1f) + 1u) * ((crtc_[9] & 0x80) ? 2 : 1);
  const uint32_t height = vertical_display_lines() / repeat;
  if (height == 0 || uint64_t{width} * height > kMaxFramePixels) return false;
  const uint64_t stride = crtc_[0x13] * 8u;
  const uint64_t start = ((crtc_[0x0c] << 8) | crtc_[0x0d]) * 4u;
  frame.resize(width, height);
  for (uint32_t y = 0; y < height; ++y) {
    for (uint32_t x = 0; x < width; ++x) {
      const uint64_t address = start + y * stride + x;
      if (address < vram_.size())
        frame.pixels[size_t{y} * width + x] = palette_color(vram_[address]);
    }
  }
  return true;
}

bool StdVga::render_planar(Frame& frame) const {
  // 16 colours in four planes, eight pixels per byte (modes 0Dh-12h).
  const uint32_t width = (crtc_[1] + 1u) * 8;
  const uint32_t repeat = ((crtc_[9] & 0x1f) + 1u) * ((crtc_[9] & 0x80) ? 2 : 1);
  const uint32_t height = vertical_display_lines() / repeat;
  if (height == 0 || uint64_t{width} * height > kMaxFramePixels) return false;
  const uint32_t stride = crtc_[0x13] * 2u;
  const uint32_t start = (crtc_[0x0c] << 8) | crtc_[0x0d];
  const uint8_t plane_enable = attribute_[vga::kArColorPlaneEnable] & 0x0f;
  frame.resize(width, height);
  for (uint32_t y = 0; y < height; ++y) {
    for (uint32_t x = 0; x < width; ++x) {
      const size_t offset = ((start + y * stride + x / 8) % kPlaneSize) * 4;
      const unsigned bit = 7 - (x % 8);
      uint8_t color = 0;
      for (unsigned plane = 0; plane < 4; ++plane) {
        color |= static_cast<uint8_t>(((vram_[offset + plane] >> bit) & 1) << plane);
      }
      frame.pixels[size_t{y} * width + x] = palette_color(attribute_color(color & plane_enable));
    }
  }
  return true;
}

}  // namespace lamina::hw
