#pragma once
// StateWriter/StateReader: the versioned stream that device and machine state is saved to for
// checkpoints and migration. A stream is a sequence of sections; each section carries a name, a
// version and a byte length, so a reader can check it is restoring the right thing, refuse a
// version it does not know, and skip fields a newer writer appended.
//
// Encoding (all integers little-endian):
//   section := name_length:u16 name:bytes version:u32 payload_length:u64 payload
//   blob    := length:u64 bytes
// Sections nest: a payload may contain sections.
//
// Ownership: a writer owns its buffer; a reader borrows the span it reads and must not outlive
// it. Thread-safety: none; one thread saves or loads a stopped machine.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "base/error.h"

namespace lamina {

class StateWriter {
 public:
  // Opens a section; every begin_section() needs a matching end_section().
  void begin_section(std::string_view name, uint32_t version);
  void end_section();

  void put_u8(uint8_t value);
  void put_u16(uint16_t value);
  void put_u32(uint32_t value);
  void put_u64(uint64_t value);
  void put_bool(bool value) { put_u8(value ? 1 : 0); }
  // A length-prefixed byte blob.
  void put_bytes(std::span<const std::byte> bytes);

  // Writes each value in order by its type (bool, uint8_t ... uint64_t), so save() stays one
  // line per group of fields and load() mirrors it with StateReader::get().
  template <typename... T>
  void put(const T&... values) {
    (put_one(values), ...);
  }

  // The encoded stream; valid only when every section is closed.
  const std::vector<std::byte>& data() const { return data_; }
  bool complete() const { return open_sections_.empty(); }

 private:
  template <typename T>
  void put_one(const T& value) {
    if constexpr (std::is_same_v<T, bool>)
      put_bool(value);
    else if constexpr (std::is_same_v<T, uint8_t>)
      put_u8(value);
    else if constexpr (std::is_same_v<T, uint16_t>)
      put_u16(value);
    else if constexpr (std::is_same_v<T, uint32_t>)
      put_u32(value);
    else if constexpr (std::is_same_v<T, uint64_t>)
      put_u64(value);
    else
      static_assert(sizeof(T) == 0, "StateWriter::put takes bool and uint8_t..uint64_t");
  }
  void append(const void* bytes, size_t size);

  std::vector<std::byte> data_;
  std::vector<size_t> open_sections_;  // offsets of the payload_length fields to patch
};

class StateReader {
 public:
  explicit StateReader(std::span<const std::byte> data);

  // Enters the next section, which must be called `name`; returns its version. The caller
  // rejects versions it does not know. Fails on a different name or truncated input.
  [[nodiscard]] Result<uint32_t> begin_section(std::string_view name);
  // Leaves the innermost section, skipping any fields a newer writer appended.
  [[nodiscard]] Result<void> end_section();

  [[nodiscard]] Result<uint8_t> get_u8();
  [[nodiscard]] Result<uint16_t> get_u16();
  [[nodiscard]] Result<uint32_t> get_u32();
  [[nodiscard]] Result<uint64_t> get_u64();
  // Fails on any byte other than 0 or 1, since a corrupt flag must not pass as true.
  [[nodiscard]] Result<bool> get_bool();
  // Reads a blob that must be exactly out.size() bytes long (fixed-size device arrays).
  [[nodiscard]] Result<void> get_bytes(std::span<std::byte> out);
  // Reads a blob of any length up to max_size.
  [[nodiscard]] Result<std::vector<std::byte>> get_blob(uint64_t max_size);

  // Reads each value in order by its type, mirroring StateWriter::put(); stops at the first
  // failure and leaves the remaining values untouched.
  template <typename... T>
  [[nodiscard]] Result<void> get(T&... values) {
    Result<void> result;
    (void)((result = get_one(values), result.has_value()) && ...);
    return result;
  }

  // True when every byte of the stream (outside any open section) has been consumed.
  bool at_end() const { return position_ == data_.size() && limits_.empty(); }
  // Bytes readable before the innermost section (or the stream) ends: a loader reads fields a
  // later writer appended to a section only when they are there.
  uint64_t remaining() const;

 private:
  template <typename T>
  Result<void> get_one(T& value) {
    Result<T> got = [this] {
      if constexpr (std::is_same_v<T, bool>)
        return get_bool();
      else if constexpr (std::is_same_v<T, uint8_t>)
        return get_u8();
      else if constexpr (std::is_same_v<T, uint16_t>)
        return get_u16();
      else if constexpr (std::is_same_v<T, uint32_t>)
        return get_u32();
      else if constexpr (std::is_same_v<T, uint64_t>)
        return get_u64();
      else
        static_assert(sizeof(T) == 0, "StateReader::get takes bool and uint8_t..uint64_t");
    }();
    if (!got) return fail(got.error());
    value = *got;
    return {};
  }
  [[nodiscard]] Result<void> take(void* out, size_t size, std::string_view what);
  std::string where() const;

  std::span<const std::byte> data_;
  size_t position_ = 0;
  struct Open {
    std::string name;
    size_t end;
  };
  std::vector<Open> limits_;
};

}  // namespace lamina
