#include "ahci/ata_identify.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::ahci {

void IdentifyData::set_string(size_t word, size_t length_words, std::string_view text) {
  for (size_t i = 0; i < length_words; ++i) {
    const auto high = static_cast<uint8_t>(2 * i < text.size() ? text[2 * i] : ' ');
    const auto low = static_cast<uint8_t>(2 * i + 1 < text.size() ? text[2 * i + 1] : ' ');
    set(word + i, static_cast<uint16_t>(high << 8 | low));
  }
}

void IdentifyData::set_capacity(uint64_t sectors) {
  const auto sectors28 = static_cast<uint32_t>(std::min<uint64_t>(sectors, 0x0fffffff));
  set(60, static_cast<uint16_t>(sectors28));
  set(61, static_cast<uint16_t>(sectors28 >> 16));
  for (size_t i = 0; i < 4; ++i) set(100 + i, static_cast<uint16_t>(sectors >> (16 * i)));
}

std::array<std::byte, 2 * IdentifyData::kWords> IdentifyData::bytes() const {
  std::array<std::byte, 2 * kWords> out{};
  for (size_t i = 0; i < kWords; ++i) store_le<uint16_t>(out.data() + 2 * i, words_[i]);
  out[510] = std::byte{0xa5};
  uint8_t sum = 0;
  for (size_t i = 0; i < 511; ++i) sum = static_cast<uint8_t>(sum + static_cast<uint8_t>(out[i]));
  out[511] = static_cast<std::byte>(static_cast<uint8_t>(-sum));
  return out;
}

}  // namespace lamina::ahci
