#pragma once
// The 256-word IDENTIFY (PACKET) DEVICE data block both drive kinds answer (ACS-3 section
// 7.12.7 and 7.13.6): a builder for its words, its ATA strings and its integrity word.
//
// A value type; safe from any thread.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace lamina::ahci {

class IdentifyData {
 public:
  static constexpr size_t kWords = 256;

  void set(size_t word, uint16_t value) { words_.at(word) = value; }
  uint16_t get(size_t word) const { return words_.at(word); }
  // An ATA string of `length_words` words from `word` on: two characters a word, the first
  // in the high byte, padded with spaces (ACS-3 section 3.4.9).
  void set_string(size_t word, size_t length_words, std::string_view text);
  // Words 100-103 (and 60-61 capped at 28 bits) hold a sector count.
  void set_capacity(uint64_t sectors);
  // The 512 bytes as the device sends them, word 255 set to the integrity checksum (signature
  // 0xA5 in the low byte, the two's complement of the byte sum in the high byte).
  std::array<std::byte, 2 * kWords> bytes() const;

 private:
  std::array<uint16_t, kWords> words_{};
};

}  // namespace lamina::ahci
