#pragma once
// Frame: one rendered picture of a screen, 0x00RRGGBB pixels row by row, and the text a text
// mode shows (empty in graphics modes). A plain value; the renderer fills it, the VNC server
// and the PNG writer read it.

#include <cstdint>
#include <string>
#include <vector>

namespace lamina::hw {

struct Frame {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint32_t> pixels;  // width * height
  // Text mode: the characters, one line per row ending in '\n', CP437 bytes above 0x7e and
  // control characters shown as '.', trailing blanks kept so columns line up.
  std::string text;

  void resize(uint32_t new_width, uint32_t new_height) {
    width = new_width;
    height = new_height;
    pixels.assign(static_cast<size_t>(width) * height, 0);
  }
};

}  // namespace lamina::hw
