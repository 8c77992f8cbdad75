#pragma once
// Host-side decompression of the compressed vmlinux inside a bzImage, so Lamina can enter the
// decompressed kernel directly instead of running the kernel's own decompressor on the guest
// CPU. Uses Debian's libraries: zlib (gzip), liblzma (xz, lzma), libzstd, libbz2, liblz4.
//
// Stateless functions; safe to call from any thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "base/error.h"

namespace lamina::machine {

enum class Compression { kGzip, kBzip2, kLzma, kXz, kLzo, kLz4, kZstd };

std::string_view to_string(Compression compression);

// Recognizes the format by its magic bytes (the formats of arch/x86/boot/compressed/Makefile).
Result<Compression> detect_compression(std::span<const std::byte> data);

// A decompressed kernel. The buffer is allocated without zeroing, so a large declared size
// costs address space, not memory, until the decompressor writes it.
class DecompressedKernel {
 public:
  explicit DecompressedKernel(size_t size)
      : data_(std::make_unique_for_overwrite<std::byte[]>(size)), size_(size) {}
  std::span<std::byte> bytes() { return {data_.get(), size_}; }
  std::span<const std::byte> bytes() const { return {data_.get(), size_}; }

 private:
  std::unique_ptr<std::byte[]> data_;
  size_t size_;
};

// Decompresses a bzImage payload: a compressed stream followed by the decompressed size as a
// little-endian 32-bit number (the kernel build's size_append). The output must have exactly
// that size, which may not exceed max_output: a payload that claims or produces more, is
// truncated, or fails its checksum gets a kCorrupt error naming the format. LZO payloads are
// kUnsupported (no Debian kernel uses it; use the in-guest decompressor for those).
Result<DecompressedKernel> decompress_kernel_payload(std::span<const std::byte> payload,
                                                         uint64_t max_output);

}  // namespace lamina::machine
