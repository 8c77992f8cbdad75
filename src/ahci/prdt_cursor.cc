#include "ahci/prdt_cursor.h"

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::ahci {

Result<bool> PrdtCursor::advance() {
  while (region_left_ == 0) {
    if (next_entry_ >= entries_) return false;
    std::array<std::byte, kEntrySize> entry{};
    const uint64_t at = table_ + uint64_t{next_entry_} * kEntrySize;
    if (auto read = memory_.read(at, entry); !read) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("PRDT entry {} at {:#x} is outside guest RAM", next_entry_, at));
    }
    ++next_entry_;
    // DBA: bit 0 is reserved (word alignment), DBC: bits 21:0 hold the byte count minus one.
    region_address_ = load_le<uint64_t>(entry.data()) & ~uint64_t{1};
    region_left_ = (load_le<uint32_t>(entry.data() + 12) & (kMaxEntryBytes - 1)) + 1;
  }
  return true;
}

Result<void> PrdtCursor::to_guest(std::span<const std::byte> data) {
  while (!data.empty()) {
    auto more = advance();
    if (!more) return fail(more.error());
    if (!*more) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("the PRDT's {} entries end before the command's data does",
                              entries_));
    }
    const uint64_t length = std::min<uint64_t>(region_left_, data.size());
    std::span<std::byte> host = memory_.map_for_write(region_address_, length);
    if (host.empty()) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("PRDT region {:#x}+{} is outside guest RAM", region_address_,
                              length));
    }
    std::memcpy(host.data(), data.data(), length);
    memory_.written(region_address_, length);
    region_address_ += length;
    region_left_ -= length;
    transferred_ += length;
    data = data.subspan(length);
  }
  return {};
}

Result<void> PrdtCursor::from_guest(std::span<std::byte> data) {
  while (!data.empty()) {
    auto more = advance();
    if (!more) return fail(more.error());
    if (!*more) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("the PRDT's {} entries end before the command's data does",
                              entries_));
    }
    const uint64_t length = std::min<uint64_t>(region_left_, data.size());
    std::span<const std::byte> host = memory_.map_for_read(region_address_, length);
    if (host.empty()) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("PRDT region {:#x}+{} is outside guest RAM", region_address_,
                              length));
    }
    std::memcpy(data.data(), host.data(), length);
    region_address_ += length;
    region_left_ -= length;
    transferred_ += length;
    data = data.subspan(length);
  }
  return {};
}

}  // namespace lamina::ahci
