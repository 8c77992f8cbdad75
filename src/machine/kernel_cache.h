#pragma once
// KernelCache: decompressed bzImage payloads kept on disk, so booting a kernel a second time
// skips its decompression (xz, Debian's format, takes ~0.7 s of host CPU for a 66 MB vmlinux;
// reading the cached copy back takes ~0.05 s).
//
// An entry is `<sha256 of the compressed payload>.zst` in the folder: a zstd frame with its
// content checksum, followed by the decompressed size as a little-endian 32-bit number (the
// bzImage payload layout, so decompress_kernel_payload reads it with its exact-size and bomb
// checks). The key is a cryptographic hash because the folder may serve many VMs' kernels: no
// image can be made to fetch another's entry. The cache is best effort: a missing, unreadable,
// corrupt or unwritable folder or entry means decompressing as without it, never an error.
// Entries are written to a temporary name and renamed (a reader never sees half an entry);
// the folder keeps the `max_entries` most recently used ones.
//
// Ownership: holds the folder's path only. Thread-safety: distinct processes may share a
// folder (rename is atomic); one object may be used from any thread.

#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>

#include "base/error.h"
#include "machine/kernel_decompressor.h"

namespace lamina::machine {

class KernelCache {
 public:
  static constexpr size_t kDefaultEntries = 8;

  explicit KernelCache(std::filesystem::path folder, size_t max_entries = kDefaultEntries)
      : folder_(std::move(folder)), max_entries_(max_entries) {}

  // ${LAMINA_CACHE:-$HOME/.cache/lamina}/kernels, or nullopt when neither is set.
  static std::optional<std::filesystem::path> default_folder();

  // decompress_kernel_payload's result for `payload`, from the cache when it holds a valid
  // entry for it, else decompressed (and stored for the next time). Errors are the
  // decompressor's, for the payload itself.
  Result<DecompressedKernel> decompress(std::span<const std::byte> payload, uint64_t max_output) const;

  const std::filesystem::path& folder() const { return folder_; }

 private:
  std::optional<DecompressedKernel> lookup(const std::filesystem::path& entry,
                                           std::span<const std::byte> payload,
                                           uint64_t max_output) const;
  void store(const std::filesystem::path& entry, const DecompressedKernel& kernel) const;
  void prune() const;

  std::filesystem::path folder_;
  size_t max_entries_;
};

}  // namespace lamina::machine
