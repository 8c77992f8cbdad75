#pragma once
// Builders for small kernel images written byte by byte in tests: ELF32/ELF64 executables and
// bzImages around a payload, following the formats' specs (System V gABI, Linux boot.rst).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

#include "base/byte_order.h"

namespace lamina::machine::testing {

using Bytes = std::vector<std::byte>;

inline Bytes to_bytes(std::string_view text) {
  Bytes bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

template <typename T>
void put(Bytes& bytes, size_t offset, T value) {
  if (bytes.size() < offset + sizeof(T)) bytes.resize(offset + sizeof(T));
  store_le<T>(bytes.data() + offset, value);
}

inline void put_bytes(Bytes& bytes, size_t offset, std::span<const std::byte> data) {
  if (bytes.size() < offset + data.size()) bytes.resize(offset + data.size());
  std::memcpy(bytes.data() + offset, data.data(), data.size());
}

struct TestSegment {
  uint64_t physical_address;
  uint64_t virtual_address;
  Bytes content;
  uint64_t memory_size;  // >= content.size()
};

// An executable ELF with one PT_LOAD program header per segment, contents after the headers.
inline Bytes make_elf(bool is_64_bit, uint16_t machine, uint64_t entry,
                      const std::vector<TestSegment>& segments) {
  const size_t header_size = is_64_bit ? 64 : 52;
  const size_t entry_size = is_64_bit ? 56 : 32;
  Bytes elf(header_size + entry_size * segments.size());
  elf[0] = std::byte{0x7F};
  elf[1] = std::byte{'E'};
  elf[2] = std::byte{'L'};
  elf[3] = std::byte{'F'};
  elf[4] = std::byte{static_cast<uint8_t>(is_64_bit ? 2 : 1)};
  elf[5] = std::byte{1};  // little-endian
  elf[6] = std::byte{1};  // EV_CURRENT
  put<uint16_t>(elf, 16, 2);  // ET_EXEC
  put<uint16_t>(elf, 18, machine);
  put<uint32_t>(elf, 20, 1);
  if (is_64_bit) {
    put<uint64_t>(elf, 24, entry);
    put<uint64_t>(elf, 32, header_size);
    put<uint16_t>(elf, 52, static_cast<uint16_t>(header_size));
    put<uint16_t>(elf, 54, static_cast<uint16_t>(entry_size));
    put<uint16_t>(elf, 56, static_cast<uint16_t>(segments.size()));
  } else {
    put<uint32_t>(elf, 24, static_cast<uint32_t>(entry));
    put<uint32_t>(elf, 28, static_cast<uint32_t>(header_size));
    put<uint16_t>(elf, 40, static_cast<uint16_t>(header_size));
    put<uint16_t>(elf, 42, static_cast<uint16_t>(entry_size));
    put<uint16_t>(elf, 44, static_cast<uint16_t>(segments.size()));
  }
  size_t data = elf.size();
  for (size_t i = 0; i < segments.size(); ++i) {
    const TestSegment& segment = segments[i];
    const size_t at = header_size + i * entry_size;
    put<uint32_t>(elf, at, 1);  // PT_LOAD
    if (is_64_bit) {
      put<uint32_t>(elf, at + 4, 7);
      put<uint64_t>(elf, at + 8, data);
      put<uint64_t>(elf, at + 16, segment.virtual_address);
      put<uint64_t>(elf, at + 24, segment.physical_address);
      put<uint64_t>(elf, at + 32, segment.content.size());
      put<uint64_t>(elf, at + 40, segment.memory_size);
    } else {
      put<uint32_t>(elf, at + 4, static_cast<uint32_t>(data));
      put<uint32_t>(elf, at + 8, static_cast<uint32_t>(segment.virtual_address));
      put<uint32_t>(elf, at + 12, static_cast<uint32_t>(segment.physical_address));
      put<uint32_t>(elf, at + 16, static_cast<uint32_t>(segment.content.size()));
      put<uint32_t>(elf, at + 20, static_cast<uint32_t>(segment.memory_size));
      put<uint32_t>(elf, at + 24, 7);
    }
    put_bytes(elf, data, segment.content);
    data += segment.content.size();
  }
  return elf;
}

struct TestBzImageFields {
  uint16_t version = 0x020F;
  uint8_t setup_sects = 1;
  uint16_t xloadflags = 0x3;
  uint32_t cmdline_size = 255;
  uint32_t initrd_addr_max = 0x7FFFFFFF;
  uint64_t pref_address = 0x1000000;
  uint32_t init_size = 0x400000;
  uint32_t kernel_alignment = 0x200000;
};

// A bzImage whose protected-mode part is 0x400 bytes of code stub, then the payload (the
// compressed stream followed by its LE32 size, as the kernel build appends it).
inline Bytes make_bzimage(const Bytes& payload, const TestBzImageFields& fields = {}) {
  const size_t setup_size = (size_t{fields.setup_sects} + 1) * 512;
  Bytes image(setup_size);
  image[0x1F1] = std::byte{fields.setup_sects};
  put<uint16_t>(image, 0x1FE, 0xAA55);
  image[0x200] = std::byte{0xEB};  // jmp short to the end of the header
  image[0x201] = std::byte{0x6A};  // 0x202 + 0x6A = 0x26C
  put<uint32_t>(image, 0x202, 0x53726448);
  put<uint16_t>(image, 0x206, fields.version);
  image[0x211] = std::byte{0x01};  // LOADED_HIGH
  put<uint32_t>(image, 0x214, 0x100000);
  put<uint32_t>(image, 0x22C, fields.initrd_addr_max);
  put<uint32_t>(image, 0x230, fields.kernel_alignment);
  image[0x234] = std::byte{1};
  image[0x235] = std::byte{21};
  put<uint16_t>(image, 0x236, fields.xloadflags);
  put<uint32_t>(image, 0x238, fields.cmdline_size);
  put<uint32_t>(image, 0x248, 0x400);
  put<uint32_t>(image, 0x24C, static_cast<uint32_t>(payload.size()));
  put<uint64_t>(image, 0x258, fields.pref_address);
  put<uint32_t>(image, 0x260, fields.init_size);
  Bytes protected_mode(0x400, std::byte{0x90});
  protected_mode.insert(protected_mode.end(), payload.begin(), payload.end());
  while (protected_mode.size() % 16 != 0) protected_mode.push_back(std::byte{0});
  put<uint32_t>(image, 0x1F4, static_cast<uint32_t>(protected_mode.size() / 16));
  image.insert(image.end(), protected_mode.begin(), protected_mode.end());
  return image;
}

// Appends the decompressed size, as the kernel build's size_append does.
inline Bytes with_size(Bytes compressed, uint32_t size) {
  put<uint32_t>(compressed, compressed.size(), size);
  return compressed;
}

}  // namespace lamina::machine::testing
