#include "machine/kernel_decompressor.h"

#include <bzlib.h>
#include <fmt/format.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "base/byte_order.h"

namespace lamina::machine {

namespace {

// liblzma's decoder memory limit: far above what a kernel's xz settings need (the kernel's own
// decompressor runs in a few MiB), low enough that a hostile header cannot exhaust the host.
constexpr uint64_t kLzmaMemoryLimit = 256 << 20;
constexpr uint32_t kLz4LegacyMagic = 0x184C2102;
constexpr uint64_t kLz4LegacyBlockSize = 8 << 20;

Error corrupt(Compression compression, std::string_view what) {
  return Error(ErrorCode::kCorrupt,
               fmt::format("kernel payload ({}) is corrupt: {}", to_string(compression), what));
}

bool starts_with(std::span<const std::byte> data, std::initializer_list<uint8_t> magic) {
  if (data.size() < magic.size()) return false;
  size_t i = 0;
  for (uint8_t byte : magic) {
    if (data[i++] != std::byte{byte}) return false;
  }
  return true;
}

Result<void> inflate_gzip(std::span<const std::byte> input, std::span<std::byte> output) {
  z_stream stream{};
  // 16 + MAX_WBITS: expect a gzip (RFC 1952) wrapper, not zlib.
  if (inflateInit2(&stream, 16 + MAX_WBITS) != Z_OK) {
    return fail(ErrorCode::kInternal, "zlib could not start a decoder");
  }
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  stream.next_out = reinterpret_cast<Bytef*>(output.data());
  stream.avail_out = static_cast<uInt>(output.size());
  const int status = inflate(&stream, Z_FINISH);
  const uint64_t produced = stream.total_out;
  const bool full = stream.avail_out == 0;
  const std::string message = stream.msg != nullptr ? stream.msg : "truncated data";
  inflateEnd(&stream);
  if (status == Z_STREAM_END && produced == output.size()) return {};
  if (status == Z_STREAM_END) {
    return std::unexpected(corrupt(Compression::kGzip, "it decompresses to less than its size"));
  }
  if (status == Z_BUF_ERROR && full) {
    return std::unexpected(corrupt(Compression::kGzip, "it decompresses to more than its size"));
  }
  return std::unexpected(corrupt(Compression::kGzip, message));
}

Result<void> decode_lzma(Compression compression, std::span<const std::byte> input,
                         std::span<std::byte> output) {
  lzma_stream stream = LZMA_STREAM_INIT;
  const lzma_ret started = compression == Compression::kXz
                               ? lzma_stream_decoder(&stream, kLzmaMemoryLimit, 0)
                               : lzma_alone_decoder(&stream, kLzmaMemoryLimit);
  if (started != LZMA_OK) return fail(ErrorCode::kInternal, "liblzma could not start a decoder");
  stream.next_in = reinterpret_cast<const uint8_t*>(input.data());
  stream.avail_in = input.size();
  stream.next_out = reinterpret_cast<uint8_t*>(output.data());
  stream.avail_out = output.size();
  // liblzma answers LZMA_BUF_ERROR after a call that could make no progress, so this ends.
  lzma_ret status = LZMA_OK;
  while (status == LZMA_OK) status = lzma_code(&stream, LZMA_FINISH);
  const uint64_t produced = stream.total_out;
  const bool full = stream.avail_out == 0;
  lzma_end(&stream);
  if (status == LZMA_STREAM_END && produced == output.size()) return {};
  if (status == LZMA_STREAM_END) {
    return std::unexpected(corrupt(compression, "it decompresses to less than its size"));
  }
  if (status == LZMA_BUF_ERROR && full) {
    return std::unexpected(corrupt(compression, "it decompresses to more than its size"));
  }
  switch (status) {
    case LZMA_MEMLIMIT_ERROR:
      return std::unexpected(corrupt(compression, "its dictionary needs too much memory"));
    case LZMA_FORMAT_ERROR:
      return std::unexpected(corrupt(compression, "bad stream header"));
    case LZMA_DATA_ERROR:
      return std::unexpected(corrupt(compression, "bad compressed data"));
    default:
      return std::unexpected(corrupt(compression, "truncated or mis-sized data"));
  }
}

Result<void> decode_zstd(std::span<const std::byte> input, std::span<std::byte> output) {
  ZSTD_DCtx* context = ZSTD_createDCtx();
  if (context == nullptr) return fail(ErrorCode::kInternal, "libzstd could not start a decoder");
  // Single-shot into the whole output buffer: no window buffer, whatever the window size says.
  const size_t result =
      ZSTD_decompressDCtx(context, output.data(), output.size(), input.data(), input.size());
  ZSTD_freeDCtx(context);
  if (ZSTD_isError(result)) {
    if (ZSTD_getErrorCode(result) == ZSTD_error_dstSize_tooSmall) {
      return std::unexpected(corrupt(Compression::kZstd, "it decompresses to more than its size"));
    }
    return std::unexpected(corrupt(Compression::kZstd, ZSTD_getErrorName(result)));
  }
  if (result != output.size()) {
    return std::unexpected(corrupt(Compression::kZstd, "it decompresses to less than its size"));
  }
  return {};
}

Result<void> decode_bzip2(std::span<const std::byte> input, std::span<std::byte> output) {
  bz_stream stream{};
  if (BZ2_bzDecompressInit(&stream, 0, 0) != BZ_OK) {
    return fail(ErrorCode::kInternal, "libbz2 could not start a decoder");
  }
  stream.next_in = const_cast<char*>(reinterpret_cast<const char*>(input.data()));
  stream.avail_in = static_cast<unsigned>(input.size());
  stream.next_out = reinterpret_cast<char*>(output.data());
  stream.avail_out = static_cast<unsigned>(output.size());
  int status = BZ_OK;
  while (status == BZ_OK) {
    const unsigned in_before = stream.avail_in;
    const unsigned out_before = stream.avail_out;
    status = BZ2_bzDecompress(&stream);
    if (status == BZ_OK && stream.avail_in == in_before && stream.avail_out == out_before) break;
  }
  const uint64_t produced =
      (uint64_t{stream.total_out_hi32} << 32) | stream.total_out_lo32;
  const bool full = stream.avail_out == 0;
  BZ2_bzDecompressEnd(&stream);
  if (status == BZ_STREAM_END && produced == output.size()) return {};
  if (status == BZ_OK && full) {
    return std::unexpected(corrupt(Compression::kBzip2, "it decompresses to more than its size"));
  }
  return std::unexpected(corrupt(Compression::kBzip2, status == BZ_OK ? "truncated data"
                                                                      : "bad compressed data"));
}

// The kernel uses lz4's legacy format (lz4 -l): a magic, then blocks each preceded by its
// compressed size, each decompressing to at most 8 MiB (lib/decompress_unlz4.c).
Result<void> decode_lz4_legacy(std::span<const std::byte> input, std::span<std::byte> output) {
  uint64_t in = 0;
  uint64_t out = 0;
  while (input.size() - in >= 4) {
    const uint32_t size = load_le<uint32_t>(input.data() + in);
    in += 4;
    if (size == kLz4LegacyMagic) continue;  // start of (another) concatenated archive
    if (size == 0 || size > input.size() - in || size > INT_MAX) {
      return std::unexpected(corrupt(Compression::kLz4, "a block runs past the end of the data"));
    }
    const uint64_t room = std::min<uint64_t>(kLz4LegacyBlockSize, output.size() - out);
    const int produced = LZ4_decompress_safe(reinterpret_cast<const char*>(input.data() + in),
                                             reinterpret_cast<char*>(output.data() + out),
                                             static_cast<int>(size), static_cast<int>(room));
    if (produced < 0) {
      return std::unexpected(corrupt(Compression::kLz4, room < kLz4LegacyBlockSize
                                                            ? "bad block or more than its size"
                                                            : "bad compressed block"));
    }
    in += size;
    out += static_cast<uint64_t>(produced);
  }
  if (in != input.size() || out != output.size()) {
    return std::unexpected(corrupt(Compression::kLz4, "truncated or mis-sized data"));
  }
  return {};
}

}  // namespace

std::string_view to_string(Compression compression) {
  switch (compression) {
    case Compression::kGzip: return "gzip";
    case Compression::kBzip2: return "bzip2";
    case Compression::kLzma: return "lzma";
    case Compression::kXz: return "xz";
    case Compression::kLzo: return "lzo";
    case Compression::kLz4: return "lz4";
    case Compression::kZstd: return "zstd";
  }
  return "unknown";
}

Result<Compression> detect_compression(std::span<const std::byte> data) {
  if (starts_with(data, {0x1F, 0x8B})) return Compression::kGzip;
  if (starts_with(data, {'B', 'Z', 'h'})) return Compression::kBzip2;
  if (starts_with(data, {0xFD, '7', 'z', 'X', 'Z', 0x00})) return Compression::kXz;
  if (starts_with(data, {0x89, 'L', 'Z', 'O'})) return Compression::kLzo;
  if (starts_with(data, {0x02, 0x21, 0x4C, 0x18})) return Compression::kLz4;
  if (starts_with(data, {0x28, 0xB5, 0x2F, 0xFD})) return Compression::kZstd;
  // .lzma (lzma_alone) has no magic; the kernel's header starts with properties byte 0x5D
  // (lc=3, lp=0, pb=2) and a little-endian dictionary size.
  if (starts_with(data, {0x5D, 0x00, 0x00})) return Compression::kLzma;
  return fail(ErrorCode::kUnsupported, "kernel payload is in an unknown compression format");
}

Result<DecompressedKernel> decompress_kernel_payload(std::span<const std::byte> payload,
                                                         uint64_t max_output) {
  if (payload.size() < 8) {
    return fail(ErrorCode::kCorrupt, "kernel payload is too short to hold compressed data");
  }
  auto compression = detect_compression(payload);
  if (!compression) return fail(compression.error());
  if (*compression == Compression::kLzo) {
    return fail(ErrorCode::kUnsupported,
                "kernel payload is LZO-compressed, which Lamina does not decompress natively; "
                "boot it with the kernel's own decompressor (bzImage entry)");
  }
  const uint64_t declared = load_le<uint32_t>(payload.data() + payload.size() - 4);
  if (declared == 0 || declared > max_output) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("kernel payload claims to decompress to {} bytes; the limit is {}",
                            declared, max_output));
  }
  const std::span<const std::byte> input = payload.first(payload.size() - 4);
  DecompressedKernel kernel(declared);
  const std::span<std::byte> output = kernel.bytes();
  Result<void> done;
  switch (*compression) {
    case Compression::kGzip: done = inflate_gzip(input, output); break;
    case Compression::kXz:
    case Compression::kLzma: done = decode_lzma(*compression, input, output); break;
    case Compression::kZstd: done = decode_zstd(input, output); break;
    case Compression::kBzip2: done = decode_bzip2(input, output); break;
    case Compression::kLz4: done = decode_lz4_legacy(input, output); break;
    case Compression::kLzo: break;
  }
  if (!done) return fail(done.error());
  return kernel;
}

}  // namespace lamina::machine
