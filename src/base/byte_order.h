#pragma once
// Little- and big-endian loads and stores on byte spans, without alignment assumptions.
// Disk formats (VHD is big-endian, VHDX little-endian) and device registers use these.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

namespace lamina {

template <typename T>
  requires std::is_integral_v<T>
T load_le(const void* source) {
  T value;
  std::memcpy(&value, source, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) value = std::byteswap(value);
  return value;
}

template <typename T>
  requires std::is_integral_v<T>
T load_be(const void* source) {
  T value;
  std::memcpy(&value, source, sizeof(T));
  if constexpr (std::endian::native == std::endian::little) value = std::byteswap(value);
  return value;
}

template <typename T>
  requires std::is_integral_v<T>
void store_le(void* destination, T value) {
  if constexpr (std::endian::native == std::endian::big) value = std::byteswap(value);
  std::memcpy(destination, &value, sizeof(T));
}

template <typename T>
  requires std::is_integral_v<T>
void store_be(void* destination, T value) {
  if constexpr (std::endian::native == std::endian::little) value = std::byteswap(value);
  std::memcpy(destination, &value, sizeof(T));
}

// Reads a little-endian value of up to 8 bytes from a span of that size (device registers).
inline uint64_t load_le_sized(std::span<const std::byte> bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < bytes.size() && i < 8; ++i) {
    value |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  }
  return value;
}

// Writes the low bytes.size() bytes of value little-endian into the span (device registers).
inline void store_le_sized(std::span<std::byte> bytes, uint64_t value) {
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<std::byte>(i < 8 ? (value >> (8 * i)) & 0xff : 0);
  }
}

}  // namespace lamina
