#include "machine/kernel_cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "base/byte_order.h"

namespace lamina::machine {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSuffix = ".zst";
constexpr std::string_view kTemporaryMarker = ".tmp-";
// Room a zstd frame may need beyond its content (headers, incompressible blocks).
constexpr uint64_t kFrameSlack = 1 << 20;

std::optional<std::string> sha256_hex(std::span<const std::byte> data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    return std::nullopt;
  }
  std::string hex;
  for (unsigned i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

// The whole file, or nullopt when it cannot be read or is larger than `limit`.
std::optional<std::vector<std::byte>> read_bounded(const fs::path& path, uint64_t limit) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  file.seekg(0, std::ios::end);
  const std::streamoff size = file.tellg();
  if (size <= 0 || static_cast<uint64_t>(size) > limit) return std::nullopt;
  file.seekg(0);
  std::vector<std::byte> bytes(static_cast<size_t>(size));
  if (!file.read(reinterpret_cast<char*>(bytes.data()), size)) return std::nullopt;
  return bytes;
}

bool write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t written = ::write(fd, bytes.data(), bytes.size());
    if (written <= 0) return false;
    bytes = bytes.subspan(static_cast<size_t>(written));
  }
  return true;
}

}  // namespace

std::optional<fs::path> KernelCache::default_folder() {
  if (const char* configured = std::getenv("LAMINA_CACHE"); configured && *configured) {
    return fs::path(configured) / "kernels";
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return fs::path(home) / ".cache" / "lamina" / "kernels";
  }
  return std::nullopt;
}

Result<DecompressedKernel> KernelCache::decompress(std::span<const std::byte> payload,
                                                   uint64_t max_output) const {
  const std::optional<std::string> key = sha256_hex(payload);
  if (!key) return decompress_kernel_payload(payload, max_output);
  const fs::path entry = folder_ / (*key + std::string(kSuffix));
  if (auto cached = lookup(entry, payload, max_output)) return std::move(*cached);
  auto kernel = decompress_kernel_payload(payload, max_output);
  if (kernel) store(entry, *kernel);
  return kernel;
}

std::optional<DecompressedKernel> KernelCache::lookup(const fs::path& entry,
                                                      std::span<const std::byte> payload,
                                                      uint64_t max_output) const {
  auto bytes = read_bounded(entry, max_output + kFrameSlack);
  if (!bytes || bytes->size() < 4 || payload.size() < 4) return std::nullopt;
  // The entry must decompress (checksum, exact size) to the size the payload itself declares.
  if (!std::equal(bytes->end() - 4, bytes->end(), payload.end() - 4)) return std::nullopt;
  auto kernel = decompress_kernel_payload(*bytes, max_output);
  if (!kernel) return std::nullopt;
  std::error_code ignored;
  fs::last_write_time(entry, fs::file_time_type::clock::now(), ignored);  // most recently used
  return std::move(*kernel);
}

void KernelCache::store(const fs::path& entry, const DecompressedKernel& kernel) const {
  const std::span<const std::byte> content = kernel.bytes();
  if (content.size() > UINT32_MAX) return;  // the size trailer is 32 bits, as in a bzImage
  std::error_code error;
  fs::create_directories(folder_, error);
  if (error) return;

  ZSTD_CCtx* context = ZSTD_createCCtx();
  if (context == nullptr) return;
  // Level 1: the fastest to write (~0.2 s for 66 MB), reads back at ~1 GB/s; the checksum lets
  // a damaged entry be told from a good one.
  ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1);
  std::vector<std::byte> frame(ZSTD_compressBound(content.size()) + 4);
  const size_t compressed =
      ZSTD_compress2(context, frame.data(), frame.size() - 4, content.data(), content.size());
  ZSTD_freeCCtx(context);
  if (ZSTD_isError(compressed)) return;
  store_le(frame.data() + compressed, static_cast<uint32_t>(content.size()));
  frame.resize(compressed + 4);

  const fs::path temporary =
      entry.string() + fmt::format("{}{}", kTemporaryMarker, static_cast<long>(::getpid()));
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const bool written = write_all(fd, frame);
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) {
    fs::remove(temporary, error);
    return;
  }
  fs::rename(temporary, entry, error);
  if (error) {
    fs::remove(temporary, error);
    return;
  }
  prune();
}

void KernelCache::prune() const {
  std::error_code error;
  std::vector<std::pair<fs::file_time_type, fs::path>> entries;
  const auto now = fs::file_time_type::clock::now();
  for (const fs::directory_entry& item : fs::directory_iterator(folder_, error)) {
    const std::string name = item.path().filename().string();
    const auto written = item.last_write_time(error);
    if (error) continue;
    if (name.find(kTemporaryMarker) != std::string::npos) {
      // Left by a process that died while writing it.
      if (now - written > std::chrono::hours(1)) fs::remove(item.path(), error);
      continue;
    }
    if (name.ends_with(kSuffix)) entries.emplace_back(written, item.path());
  }
  if (entries.size() <= max_entries_) return;
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = max_entries_; i < entries.size(); ++i) fs::remove(entries[i].second, error);
}

}  // namespace lamina::machine
