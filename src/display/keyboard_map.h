#pragma once
// KeyboardMap: an X11 keysym (what an RFB client sends, RFC 6143 section 7.5.4) to the PC/AT
// scan code set 1 bytes of a US keyboard (IBM PC AT technical reference, scan code set 1):
// the key's make code, or its break code (make | 0x80), with the 0xE0 prefix of the extended
// keys. Shifted symbols map to the key that types them (the client sends Shift itself).
//
// Stateless; thread-safe.

#include <cstdint>
#include <vector>

namespace lamina::display {

// Empty for a keysym no key on a US PC keyboard types.
std::vector<uint8_t> set1_scancodes(uint32_t keysym, bool pressed);

}  // namespace lamina::display
