#include "migration/migration_protocol.h"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>

#include "base/byte_order.h"

namespace lamina::migration {
namespace {

constexpr size_t kPagesHeader = 12;
constexpr size_t kDiskChunkHeader = 24;

Error corrupt(std::string what) {
  return Error(ErrorCode::kCorrupt, "migration stream: " + what);
}

}  // namespace

std::vector<std::byte> make_message(MessageType type, std::span<const std::byte> payload) {
  std::vector<std::byte> message;
  message.reserve(payload.size() + 1);
  message.push_back(static_cast<std::byte>(type));
  message.insert(message.end(), payload.begin(), payload.end());
  return message;
}

std::vector<std::byte> make_json_message(MessageType type, const nlohmann::json& body) {
  const std::string text = body.dump();
  return make_message(type, std::as_bytes(std::span(text)));
}

Result<MessageType> message_type(std::span<const std::byte> message) {
  if (message.empty()) return fail(corrupt("an empty message"));
  const auto type = std::to_integer<uint8_t>(message[0]);
  if (type < 1 || type > static_cast<uint8_t>(MessageType::kLaneEnd)) {
    return fail(corrupt(fmt::format("unknown message type {}", type)));
  }
  return static_cast<MessageType>(type);
}

Result<nlohmann::json> message_json(std::span<const std::byte> message) {
  if (message.empty()) return fail(corrupt("an empty message"));
  const auto* text = reinterpret_cast<const char*>(message.data() + 1);
  auto body = nlohmann::json::parse(text, text + message.size() - 1, nullptr, false);
  if (body.is_discarded() || !body.is_object()) return fail(corrupt("a message that is not JSON"));
  return body;
}

std::vector<std::byte> encode_pages(std::span<const Page> pages, uint16_t round,
                                    int compression_level) {
  std::vector<std::byte> raw;
  for (const Page& page : pages) raw.insert(raw.end(), page.data.begin(), page.data.end());
  const size_t bound = ZSTD_compressBound(raw.size());
  std::vector<std::byte> message(kPagesHeader + pages.size() * 8 + bound);
  message[0] = static_cast<std::byte>(MessageType::kPages);
  store_le<uint16_t>(message.data() + 1, round);
  store_le<uint32_t>(message.data() + 4, static_cast<uint32_t>(pages.size()));
  std::byte* entry = message.data() + kPagesHeader;
  for (const Page& page : pages) {
    store_le<uint64_t>(entry, page.guest_physical | (page.data.empty() ? 1 : 0));
    entry += 8;
  }
  size_t compressed = 0;
  if (!raw.empty()) {
    compressed = ZSTD_compress(entry, bound, raw.data(), raw.size(), compression_level);
    // Compressing into a bound-sized buffer cannot fail; keep the message well-formed anyway.
    if (ZSTD_isError(compressed)) compressed = 0;
  }
  store_le<uint32_t>(message.data() + 8, static_cast<uint32_t>(compressed));
  message.resize(kPagesHeader + pages.size() * 8 + compressed);
  return message;
}

Result<DecodedPages> decode_pages(std::span<const std::byte> message) {
  if (message.size() < kPagesHeader) return fail(corrupt("a page message is too short"));
  const uint32_t count = load_le<uint32_t>(message.data() + 4);
  const uint32_t compressed = load_le<uint32_t>(message.data() + 8);
  if (count > kMaxPagesPerMessage) return fail(corrupt(fmt::format("{} pages in one message", count)));
  if (message.size() != kPagesHeader + uint64_t{count} * 8 + compressed) {
    return fail(corrupt("a page message's length does not match its header"));
  }
  DecodedPages decoded;
  decoded.round = load_le<uint16_t>(message.data() + 1);
  decoded.addresses.reserve(count);
  decoded.zero.reserve(count);
  size_t data_pages = 0;
  for (uint32_t index = 0; index < count; ++index) {
    const uint64_t entry = load_le<uint64_t>(message.data() + kPagesHeader + index * 8);
    if ((entry & (kPageBytes - 1) & ~uint64_t{1}) != 0) {
      return fail(corrupt(fmt::format("page address {:#x} is not page-aligned", entry)));
    }
    decoded.addresses.push_back(entry & ~(kPageBytes - 1));
    decoded.zero.push_back((entry & 1) != 0);
    if ((entry & 1) == 0) ++data_pages;
  }
  const std::span<const std::byte> frame = message.subspan(kPagesHeader + count * 8);
  if (data_pages == 0) {
    if (!frame.empty()) return fail(corrupt("page data follows zero pages only"));
    return decoded;
  }
  // The frame must say its size and that size must be exactly the pages it claims to hold.
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (size != data_pages * kPageBytes) {
    return fail(corrupt("the compressed pages do not hold the pages the message lists"));
  }
  decoded.data.resize(data_pages * kPageBytes);
  const size_t got = ZSTD_decompress(decoded.data.data(), decoded.data.size(), frame.data(), frame.size());
  if (ZSTD_isError(got) || got != decoded.data.size()) {
    return fail(corrupt(fmt::format("the compressed pages do not decompress ({})",
                                    ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short")));
  }
  return decoded;
}

std::vector<std::byte> encode_disk_chunk(uint32_t disk, uint64_t offset,
                                         std::span<const std::byte> data, bool zero,
                                         int compression_level) {
  const size_t bound = zero ? 0 : ZSTD_compressBound(data.size());
  std::vector<std::byte> message(kDiskChunkHeader + bound);
  message[0] = static_cast<std::byte>(MessageType::kDiskChunk);
  message[1] = static_cast<std::byte>(zero ? 1 : 0);
  store_le<uint32_t>(message.data() + 4, disk);
  store_le<uint64_t>(message.data() + 8, offset);
  store_le<uint32_t>(message.data() + 16, static_cast<uint32_t>(data.size()));
  size_t compressed = 0;
  if (!zero) {
    compressed = ZSTD_compress(message.data() + kDiskChunkHeader, bound, data.data(), data.size(),
                               compression_level);
    if (ZSTD_isError(compressed)) compressed = 0;
  }
  store_le<uint32_t>(message.data() + 20, static_cast<uint32_t>(compressed));
  message.resize(kDiskChunkHeader + compressed);
  return message;
}

Result<DiskChunk> decode_disk_chunk(std::span<const std::byte> message) {
  if (message.size() < kDiskChunkHeader) return fail(corrupt("a disk chunk message is too short"));
  DiskChunk chunk;
  const auto flags = std::to_integer<uint8_t>(message[1]);
  if ((flags & ~1u) != 0) return fail(corrupt(fmt::format("disk chunk flags {:#x}", flags)));
  chunk.zero = (flags & 1) != 0;
  chunk.disk = load_le<uint32_t>(message.data() + 4);
  chunk.offset = load_le<uint64_t>(message.data() + 8);
  chunk.length = load_le<uint32_t>(message.data() + 16);
  const uint32_t compressed = load_le<uint32_t>(message.data() + 20);
  if (chunk.length == 0 || chunk.length > kMaxDiskChunk || chunk.length % 512 != 0 ||
      chunk.offset % 512 != 0) {
    return fail(corrupt(fmt::format("a disk chunk of {} bytes at {}", chunk.length, chunk.offset)));
  }
  if (message.size() != kDiskChunkHeader + uint64_t{compressed} || (chunk.zero && compressed != 0)) {
    return fail(corrupt("a disk chunk's length does not match its header"));
  }
  if (chunk.zero) return chunk;
  const std::span<const std::byte> frame = message.subspan(kDiskChunkHeader);
  if (ZSTD_getFrameContentSize(frame.data(), frame.size()) != chunk.length) {
    return fail(corrupt("a disk chunk's data does not hold the bytes it claims"));
  }
  chunk.data.resize(chunk.length);
  const size_t got = ZSTD_decompress(chunk.data.data(), chunk.data.size(), frame.data(), frame.size());
  if (ZSTD_isError(got) || got != chunk.data.size()) {
    return fail(corrupt("a disk chunk does not decompress"));
  }
  return chunk;
}

namespace {

Result<void> send_all(int fd, const std::byte* data, size_t size) {
  while (size > 0) {
    const ssize_t sent = ::send(fd, data, size, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::kIo, fmt::format("migration link: {}", std::strerror(errno)));
    }
    data += sent;
    size -= static_cast<size_t>(sent);
  }
  return {};
}

// Reads exactly `size` bytes; `started` says whether a clean end here is a truncated frame.
Result<void> receive_all(int fd, std::byte* data, size_t size, int timeout_ms, bool started) {
  while (size > 0) {
    pollfd poll_fd{fd, POLLIN, 0};
    const int ready = ::poll(&poll_fd, 1, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::kIo, fmt::format("migration link: {}", std::strerror(errno)));
    }
    if (ready == 0) return fail(ErrorCode::kIo, "migration link: the peer stopped answering");
    const ssize_t got = ::recv(fd, data, size, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return fail(ErrorCode::kIo, fmt::format("migration link: {}", std::strerror(errno)));
    }
    if (got == 0) {
      if (!started) return fail(ErrorCode::kNotFound, "migration link: closed");
      return fail(ErrorCode::kIo, "migration link: closed inside a message");
    }
    data += got;
    size -= static_cast<size_t>(got);
    started = true;
  }
  return {};
}

}  // namespace

Result<void> write_frame(int fd, std::span<const std::byte> message) {
  std::byte length[4];
  store_le<uint32_t>(length, static_cast<uint32_t>(message.size()));
  if (auto sent = send_all(fd, length, sizeof(length)); !sent) return sent;
  return send_all(fd, message.data(), message.size());
}

Result<std::vector<std::byte>> read_frame(int fd, int timeout_ms) {
  std::byte length_bytes[4];
  if (auto got = receive_all(fd, length_bytes, sizeof(length_bytes), timeout_ms, false); !got) {
    return fail(got.error());
  }
  const uint32_t length = load_le<uint32_t>(length_bytes);
  if (length == 0 || length > kMaxMessage) {
    return fail(corrupt(fmt::format("a {}-byte message", length)));
  }
  std::vector<std::byte> message(length);
  if (auto got = receive_all(fd, message.data(), length, timeout_ms, true); !got) {
    return fail(got.error());
  }
  return message;
}

}  // namespace lamina::migration
