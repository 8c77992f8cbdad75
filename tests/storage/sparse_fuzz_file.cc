#include "sparse_fuzz_file.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace lamina::storage::test {

namespace {

constexpr uint8_t kMagic[4] = {'S', 'P', 'R', 'S'};

bool write_at(int fd, const uint8_t* bytes, size_t length, uint64_t offset) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pwrite(fd, bytes + done, length - done, static_cast<off_t>(offset + done));
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool write_fuzz_file(int fd, std::span<const uint8_t> data) {
  if (data.size() < sizeof kMagic || std::memcmp(data.data(), kMagic, sizeof kMagic) != 0) {
    return write_at(fd, data.data(), data.size(), 0);
  }
  uint64_t position = 0;
  size_t at = sizeof kMagic;
  while (at + 6 <= data.size()) {
    uint32_t hole_sectors = 0;
    uint16_t length = 0;
    std::memcpy(&hole_sectors, data.data() + at, 4);
    std::memcpy(&length, data.data() + at + 4, 2);
    at += 6;
    position = std::min(kMaxSparseFileSize, position + uint64_t{hole_sectors} * 512);
    size_t take = std::min<size_t>(length, data.size() - at);
    take = static_cast<size_t>(std::min<uint64_t>(take, kMaxSparseFileSize - position));
    if (!write_at(fd, data.data() + at, take, position)) return false;
    position += take;
    at += take;
  }
  // A trailing hole counts: the file ends where the last record does.
  return ::ftruncate(fd, static_cast<off_t>(position)) == 0;
}

std::vector<uint8_t> encode_sparse(
    const std::vector<std::pair<uint32_t, std::vector<uint8_t>>>& records) {
  std::vector<uint8_t> out(kMagic, kMagic + sizeof kMagic);
  for (const auto& [hole, bytes] : records) {
    for (size_t piece = 0; piece < bytes.size() || piece == 0; piece += 0xffff) {
      uint32_t sectors = piece == 0 ? hole : 0;
      auto length = static_cast<uint16_t>(std::min<size_t>(0xffff, bytes.size() - piece));
      uint8_t header[6];
      std::memcpy(header, &sectors, 4);
      std::memcpy(header + 4, &length, 2);
      out.insert(out.end(), header, header + 6);
      out.insert(out.end(), bytes.begin() + static_cast<ptrdiff_t>(piece),
                 bytes.begin() + static_cast<ptrdiff_t>(piece + length));
      if (bytes.empty()) break;
    }
  }
  return out;
}

}  // namespace lamina::storage::test
