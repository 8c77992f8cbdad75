#include "display/keyboard_map.h"

#include <array>

namespace lamina::display {
namespace {

struct Key {
  uint8_t code = 0;
  bool extended = false;
};

// The US layout's printable characters (keysyms 0x20-0x7e are their ASCII codes) to keys.
Key printable_key(uint32_t keysym) {
  // Set 1 make codes of the keys of rows 1-4, unshifted and shifted.
  static constexpr std::array<std::pair<char, uint8_t>, 94> kKeys = {{
      {'1', 0x02},  {'!', 0x02}, {'2', 0x03}, {'@', 0x03}, {'3', 0x04},  {'#', 0x04}, {'4', 0x05},
      {'$', 0x05},  {'5', 0x06}, {'%', 0x06}, {'6', 0x07}, {'^', 0x07},  {'7', 0x08}, {'&', 0x08},
      {'8', 0x09},  {'*', 0x09}, {'9', 0x0a}, {'(', 0x0a}, {'0', 0x0b},  {')', 0x0b}, {'-', 0x0c},
      {'_', 0x0c},  {'=', 0x0d}, {'+', 0x0d}, {'q', 0x10}, {'w', 0x11},  {'e', 0x12}, {'r', 0x13},
      {'t', 0x14},  {'y', 0x15}, {'u', 0x16}, {'i', 0x17}, {'o', 0x18},  {'p', 0x19}, {'[', 0x1a},
      {'{', 0x1a},  {']', 0x1b}, {'}', 0x1b}, {'a', 0x1e}, {'s', 0x1f},  {'d', 0x20}, {'f', 0x21},
      {'g', 0x22},  {'h', 0x23}, {'j', 0x24}, {'k', 0x25}, {'l', 0x26},  {';', 0x27}, {':', 0x27},
      {'\'', 0x28}, {'"', 0x28}, {'`', 0x29}, {'~', 0x29}, {'\\', 0x2b}, {'|', 0x2b}, {'z', 0x2c},
      {'x', 0x2d},  {'c', 0x2e}, {'v', 0x2f}, {'b', 0x30}, {'n', 0x31},  {'m', 0x32}, {',', 0x33},
      {'<', 0x33},  {'.', 0x34}, {'>', 0x34}, {'/', 0x35}, {'?', 0x35},  {' ', 0x39},
  }};
  char character = static_cast<char>(keysym);
  if (character >= 'A' && character <= 'Z') character = static_cast<char>(character - 'A' + 'a');
  for (const auto& [key_character, code] : kKeys) {
    if (key_character == character) return {code, false};
  }
  return {};
}

// X11 keysyms of the function and modifier keys (X11 keysymdef.h) to keys.
Key function_key(uint32_t keysym) {
  switch (keysym) {
    case 0xff08: return {0x0e, false};  // BackSpace
    case 0xff09: return {0x0f, false};  // Tab
    case 0xff0d: return {0x1c, false};  // Return
    case 0xff1b: return {0x01, false};  // Escape
    case 0xff50: return {0x47, true};   // Home
    case 0xff51: return {0x4b, true};   // Left
    case 0xff52: return {0x48, true};   // Up
    case 0xff53: return {0x4d, true};   // Right
    case 0xff54: return {0x50, true};   // Down
    case 0xff55: return {0x49, true};   // Page_Up
    case 0xff56: return {0x51, true};   // Page_Down
    case 0xff57: return {0x4f, true};   // End
    case 0xff63: return {0x52, true};   // Insert
    case 0xffff: return {0x53, true};   // Delete
    case 0xff7f: return {0x45, false};  // Num_Lock
    case 0xff14: return {0x46, false};  // Scroll_Lock
    case 0xff8d: return {0x1c, true};   // KP_Enter
    case 0xffaa: return {0x37, false};  // KP_Multiply
    case 0xffab: return {0x4e, false};  // KP_Add
    case 0xffad: return {0x4a, false};  // KP_Subtract
    case 0xffae: return {0x53, false};  // KP_Decimal
    case 0xffaf: return {0x35, true};   // KP_Divide
    case 0xffe1: return {0x2a, false};  // Shift_L
    case 0xffe2: return {0x36, false};  // Shift_R
    case 0xffe3: return {0x1d, false};  // Control_L
    case 0xffe4: return {0x1d, true};   // Control_R
    case 0xffe5: return {0x3a, false};  // Caps_Lock
    case 0xffe7: return {0x38, false};  // Meta_L (as Alt)
    case 0xffe8: return {0x38, true};   // Meta_R
    case 0xffe9: return {0x38, false};  // Alt_L
    case 0xffea: return {0x38, true};   // Alt_R
    case 0xffeb: return {0x5b, true};   // Super_L
    case 0xffec: return {0x5c, true};   // Super_R
    case 0xff67: return {0x5d, true};   // Menu
    default: break;
  }
  // F1-F10 are 0x3B-0x44, F11 and F12 0x57 and 0x58.
  if (keysym >= 0xffbe && keysym <= 0xffc7)
    return {static_cast<uint8_t>(0x3b + keysym - 0xffbe), false};
  if (keysym == 0xffc8) return {0x57, false};
  if (keysym == 0xffc9) return {0x58, false};
  // Keypad digits: KP_0-KP_9 (0xffb0-0xffb9) on the number pad's keys.
  static constexpr uint8_t kKeypad[10] = {0x52, 0x4f, 0x50, 0x51, 0x4b,
                                          0x4c, 0x4d, 0x47, 0x48, 0x49};
  if (keysym >= 0xffb0 && keysym <= 0xffb9) return {kKeypad[keysym - 0xffb0], false};
  return {};
}

}  // namespace

std::vector<uint8_t> set1_scancodes(uint32_t keysym, bool pressed) {
  const Key key = keysym >= 0x20 && keysym <= 0x7e ? printable_key(keysym) : function_key(keysym);
  if (key.code == 0) return {};
  std::vector<uint8_t> bytes;
  if (key.extended) bytes.push_back(0xe0);
  bytes.push_back(static_cast<uint8_t>(pressed ? key.code : key.code | 0x80));
  return bytes;
}

}  // namespace lamina::display
