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

Result<void> PrdtCursor::walk(uint64_t total,
                              const std::function<bool(uint64_t address, uint64_t done, uint64_t length)>& copy) {
  uint64_t done = 0;
  while (done < total) {
    auto more = advance();
    if (!more) return fail(more.error());
    if (!*more) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("the PRDT's {} entries end before the command's data does",
                              entries_));
    }
    const uint64_t length = std::min<uint64_t>(region_left_, total - done);
    if (!copy(region_address_, done, length)) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("PRDT region {:#x}+{} is outside guest RAM", region_address_,
                              length));
    }
    region_address_ += length;
    region_left_ -= length;
    transferred_ += length;
    done += length;
  }
  return {};
}

Result<void> PrdtCursor::to_guest(std::span<const std::byte> data) {
  return walk(data.size(), [&](uint64_t address, uint64_t done, uint64_t length) {
    std::span<std::byte> host = memory_.map_for_write(address, length);
    if (host.empty()) return false;
    std::memcpy(host.data(), data.data() + done, length);
    memory_.written(address, length);
    return true;
  });
}

Result<void> PrdtCursor::from_guest(std::span<std::byte> data) {
  return walk(data.size(), [&](uint64_t address, uint64_t done, uint64_t length) {
    std::span<const std::byte> host = memory_.map_for_read(address, length);
    if (host.empty()) return false;
    std::memcpy(data.data() + done, host.data(), length);
    return true;
  });
}

}  // namespace lamina::ahci
