#include "base/state_stream.h"

#include <fmt/format.h>

#include <cstring>

#include "base/byte_order.h"

namespace lamina {

namespace {
// A name longer than this is a corrupt stream, not a real section.
constexpr size_t kMaxSectionNameLength = 256;
}  // namespace

void StateWriter::append(const void* bytes, size_t size) {
  const auto* first = static_cast<const std::byte*>(bytes);
  data_.insert(data_.end(), first, first + size);
}

void StateWriter::begin_section(std::string_view name, uint32_t version) {
  if (name.size() > kMaxSectionNameLength) name = name.substr(0, kMaxSectionNameLength);
  put_u16(static_cast<uint16_t>(name.size()));
  append(name.data(), name.size());
  put_u32(version);
  open_sections_.push_back(data_.size());
  put_u64(0);  // patched by end_section()
}

void StateWriter::end_section() {
  if (open_sections_.empty()) return;
  size_t length_at = open_sections_.back();
  open_sections_.pop_back();
  uint64_t payload = data_.size() - (length_at + sizeof(uint64_t));
  store_le<uint64_t>(data_.data() + length_at, payload);
}

void StateWriter::put_u8(uint8_t value) { data_.push_back(static_cast<std::byte>(value)); }

void StateWriter::put_u16(uint16_t value) {
  std::byte bytes[2] = {};
  store_le(bytes, value);
  append(bytes, sizeof(bytes));
}

void StateWriter::put_u32(uint32_t value) {
  std::byte bytes[4] = {};
  store_le(bytes, value);
  append(bytes, sizeof(bytes));
}

void StateWriter::put_u64(uint64_t value) {
  std::byte bytes[8] = {};
  store_le(bytes, value);
  append(bytes, sizeof(bytes));
}

void StateWriter::put_bytes(std::span<const std::byte> bytes) {
  put_u64(bytes.size());
  append(bytes.data(), bytes.size());
}

StateReader::StateReader(std::span<const std::byte> data) : data_(data) {}

uint64_t StateReader::remaining() const {
  size_t end = limits_.empty() ? data_.size() : limits_.back().end;
  return end - position_;
}

std::string StateReader::where() const {
  std::string path;
  for (const Open& open : limits_) {
    if (!path.empty()) path += '/';
    path += open.name;
  }
  return fmt::format("saved state{}{} at byte {}", path.empty() ? "" : " section ", path,
                     position_);
}

Result<void> StateReader::take(void* out, size_t size, std::string_view what) {
  if (size > remaining()) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: truncated: {} needs {} bytes, {} left",
                                                 where(), what, size, remaining()));
  }
  // An empty blob reads into an empty vector, whose data() may be null (no memcpy then).
  if (size == 0) return {};
  std::memcpy(out, data_.data() + position_, size);
  position_ += size;
  return {};
}

Result<uint32_t> StateReader::begin_section(std::string_view name) {
  uint16_t name_length = 0;
  std::byte length_bytes[2] = {};
  if (auto result = take(length_bytes, 2, "section name length"); !result)
    return fail(result.error());
  name_length = load_le<uint16_t>(length_bytes);
  if (name_length > kMaxSectionNameLength) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: section name length {} is implausible (expected section '{}')",
                            where(), name_length, name));
  }
  std::string found(name_length, '\0');
  if (auto result = take(found.data(), name_length, "section name"); !result)
    return fail(result.error());
  if (found != name) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: expected section '{}', found '{}'", where(), name, found));
  }
  std::byte header[12] = {};
  if (auto result = take(header, sizeof(header), "section header"); !result)
    return fail(result.error());
  uint32_t version = load_le<uint32_t>(header);
  uint64_t payload = load_le<uint64_t>(header + 4);
  if (payload > remaining()) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: section '{}' claims {} bytes but only {} remain", where(), name,
                            payload, remaining()));
  }
  limits_.push_back(Open{std::string(name), position_ + static_cast<size_t>(payload)});
  return version;
}

Result<void> StateReader::end_section() {
  if (limits_.empty()) {
    return fail(ErrorCode::kInternal, fmt::format("{}: end_section() without a section", where()));
  }
  position_ = limits_.back().end;
  limits_.pop_back();
  return {};
}

Result<uint8_t> StateReader::get_u8() {
  uint8_t value = 0;
  if (auto result = take(&value, 1, "u8"); !result) return fail(result.error());
  return value;
}

Result<uint16_t> StateReader::get_u16() {
  std::byte bytes[2] = {};
  if (auto result = take(bytes, 2, "u16"); !result) return fail(result.error());
  return load_le<uint16_t>(bytes);
}

Result<uint32_t> StateReader::get_u32() {
  std::byte bytes[4] = {};
  if (auto result = take(bytes, 4, "u32"); !result) return fail(result.error());
  return load_le<uint32_t>(bytes);
}

Result<uint64_t> StateReader::get_u64() {
  std::byte bytes[8] = {};
  if (auto result = take(bytes, 8, "u64"); !result) return fail(result.error());
  return load_le<uint64_t>(bytes);
}

Result<bool> StateReader::get_bool() {
  auto value = get_u8();
  if (!value) return fail(value.error());
  if (*value > 1) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: flag byte is {}, not 0 or 1", where(), *value));
  }
  return *value == 1;
}

Result<void> StateReader::get_bytes(std::span<std::byte> out) {
  auto length = get_u64();
  if (!length) return fail(length.error());
  if (*length != out.size()) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: blob of {} bytes where {} are expected",
                                                 where(), *length, out.size()));
  }
  return take(out.data(), out.size(), "blob");
}

Result<std::vector<std::byte>> StateReader::get_blob(uint64_t max_size) {
  auto length = get_u64();
  if (!length) return fail(length.error());
  if (*length > max_size || *length > remaining()) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: blob of {} bytes exceeds the limit {} or "
                                                 "the {} bytes left",
                                                 where(), *length, max_size, remaining()));
  }
  std::vector<std::byte> blob(static_cast<size_t>(*length));
  if (auto result = take(blob.data(), blob.size(), "blob"); !result) return fail(result.error());
  return blob;
}

}  // namespace lamina
