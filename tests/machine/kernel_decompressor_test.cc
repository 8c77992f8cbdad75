#include "machine/kernel_decompressor.h"

#include <bzlib.h>
#include <gtest/gtest.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>

#include "test_images.h"

namespace lamina::machine {
namespace {

using testing::Bytes;
using testing::put;
using testing::with_size;

// Compressible but not trivial content: an ELF-like header and a counting pattern.
Bytes sample(size_t size) {
  Bytes data(size);
  for (size_t i = 0; i < size; ++i) data[i] = std::byte{static_cast<uint8_t>((i * 7) ^ (i >> 9))};
  data[0] = std::byte{0x7F};
  return data;
}

Bytes gzip(const Bytes& input) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  Bytes output(deflateBound(&stream, input.size()) + 64);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  stream.next_out = reinterpret_cast<Bytef*>(output.data());
  stream.avail_out = static_cast<uInt>(output.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  output.resize(stream.total_out);
  deflateEnd(&stream);
  return output;
}

Bytes xz(const Bytes& input) {
  Bytes output(input.size() + 4096);
  size_t position = 0;
  EXPECT_EQ(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, nullptr,
                                    reinterpret_cast<const uint8_t*>(input.data()), input.size(),
                                    reinterpret_cast<uint8_t*>(output.data()), &position,
                                    output.size()),
            LZMA_OK);
  output.resize(position);
  return output;
}

Bytes lzma_alone(const Bytes& input) {
  lzma_options_lzma options;
  lzma_lzma_preset(&options, 6);
  lzma_stream stream = LZMA_STREAM_INIT;
  EXPECT_EQ(lzma_alone_encoder(&stream, &options), LZMA_OK);
  Bytes output(input.size() + 4096);
  stream.next_in = reinterpret_cast<const uint8_t*>(input.data());
  stream.avail_in = input.size();
  stream.next_out = reinterpret_cast<uint8_t*>(output.data());
  stream.avail_out = output.size();
  EXPECT_EQ(lzma_code(&stream, LZMA_FINISH), LZMA_STREAM_END);
  output.resize(stream.total_out);
  lzma_end(&stream);
  return output;
}

// With a content checksum, as the zstd command line (which the kernel build uses) writes.
Bytes zstd(const Bytes& input) {
  Bytes output(ZSTD_compressBound(input.size()));
  ZSTD_CCtx* context = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(context, ZSTD_c_compressionLevel, 19);
  ZSTD_CCtx_setParameter(context, ZSTD_c_checksumFlag, 1);
  const size_t size =
      ZSTD_compress2(context, output.data(), output.size(), input.data(), input.size());
  ZSTD_freeCCtx(context);
  EXPECT_FALSE(ZSTD_isError(size));
  output.resize(size);
  return output;
}

Bytes bzip2(const Bytes& input) {
  Bytes output(input.size() + input.size() / 100 + 1024);
  unsigned size = static_cast<unsigned>(output.size());
  EXPECT_EQ(BZ2_bzBuffToBuffCompress(reinterpret_cast<char*>(output.data()), &size,
                                     const_cast<char*>(reinterpret_cast<const char*>(input.data())),
                                     static_cast<unsigned>(input.size()), 9, 0, 0),
            BZ_OK);
  output.resize(size);
  return output;
}

// lz4 legacy framing: magic, then per 8 MiB block its compressed size and data.
Bytes lz4_legacy(const Bytes& input) {
  Bytes output;
  put<uint32_t>(output, 0, 0x184C2102);
  for (size_t at = 0; at < input.size(); at += 8 << 20) {
    const int chunk = static_cast<int>(std::min<size_t>(8 << 20, input.size() - at));
    Bytes block(LZ4_compressBound(chunk));
    const int size = LZ4_compress_default(reinterpret_cast<const char*>(input.data() + at),
                                          reinterpret_cast<char*>(block.data()), chunk,
                                          static_cast<int>(block.size()));
    EXPECT_GT(size, 0);
    put<uint32_t>(output, output.size(), static_cast<uint32_t>(size));
    output.insert(output.end(), block.begin(), block.begin() + size);
  }
  return output;
}

struct Format {
  const char* name;
  Compression compression;
  Bytes (*compress)(const Bytes&);
};

const Format kFormats[] = {
    {"gzip", Compression::kGzip, gzip},   {"xz", Compression::kXz, xz},
    {"lzma", Compression::kLzma, lzma_alone}, {"zstd", Compression::kZstd, zstd},
    {"bzip2", Compression::kBzip2, bzip2}, {"lz4", Compression::kLz4, lz4_legacy},
};

TEST(KernelDecompressor, Lz4LegacyFramingSpansBlocks) {
  // Over 8 MiB so the legacy format needs two blocks.
  const Bytes original = sample((8 << 20) + 12345);
  auto output = decompress_kernel_payload(with_size(lz4_legacy(original), original.size()),
                                          64 << 20);
  ASSERT_TRUE(output.has_value()) << output.error().message();
  EXPECT_TRUE(std::ranges::equal(output->bytes(), original));
}

TEST(KernelDecompressor, EveryFormatRoundTrips) {
  const Bytes original = sample((1 << 20) + 12345);
  for (const Format& format : kFormats) {
    SCOPED_TRACE(format.name);
    const Bytes payload = with_size(format.compress(original), original.size());
    auto detected = detect_compression(payload);
    ASSERT_TRUE(detected.has_value());
    EXPECT_EQ(*detected, format.compression);
    auto output = decompress_kernel_payload(payload, 64 << 20);
    ASSERT_TRUE(output.has_value()) << output.error().message();
    EXPECT_TRUE(std::ranges::equal(output->bytes(), original));
  }
}

TEST(KernelDecompressor, RejectsMisSizedTruncatedAndCorruptPayloads) {
  const Bytes original = sample(300000);
  for (const Format& format : kFormats) {
    SCOPED_TRACE(format.name);
    const Bytes compressed = format.compress(original);
    // Declares less than it produces: the output buffer overflows.
    auto too_small = decompress_kernel_payload(with_size(compressed, 1000), 64 << 20);
    ASSERT_FALSE(too_small.has_value());
    EXPECT_EQ(too_small.error().code(), ErrorCode::kCorrupt);
    // Declares more than it produces.
    auto too_big = decompress_kernel_payload(with_size(compressed, 400000), 64 << 20);
    ASSERT_FALSE(too_big.has_value());
    EXPECT_EQ(too_big.error().code(), ErrorCode::kCorrupt);
    // Truncated stream.
    Bytes truncated(compressed.begin(), compressed.begin() + compressed.size() / 2);
    auto cut = decompress_kernel_payload(with_size(truncated, original.size()), 64 << 20);
    ASSERT_FALSE(cut.has_value());
    EXPECT_EQ(cut.error().code(), ErrorCode::kCorrupt);
    // Garbage in the middle (keeps the magic).
    Bytes damaged = compressed;
    for (size_t i = damaged.size() / 3; i < damaged.size() / 3 + 64; ++i) damaged[i] ^= std::byte{0x5A};
    auto bad = decompress_kernel_payload(with_size(damaged, original.size()), 64 << 20);
    // lz4 carries no checksum: damage may decode to other bytes, but must not crash.
    if (format.compression != Compression::kLz4) {
      EXPECT_FALSE(bad.has_value());
    }
  }
}

TEST(KernelDecompressor, EnforcesTheOutputLimit) {
  // A bomb: 64 MiB of zeros compresses to a few KiB; the limit stops it before any work.
  const Bytes zeros(64 << 20);
  const Bytes payload = with_size(zstd(zeros), zeros.size());
  EXPECT_LT(payload.size(), 64u << 10);
  auto limited = decompress_kernel_payload(payload, 16 << 20);
  ASSERT_FALSE(limited.has_value());
  EXPECT_NE(limited.error().message().find("limit"), std::string::npos);
  // Claiming a small size does not help: the output stops at the claimed size.
  auto lying = decompress_kernel_payload(with_size(gzip(zeros), 1 << 20), 16 << 20);
  ASSERT_FALSE(lying.has_value());
  EXPECT_NE(lying.error().message().find("more than its size"), std::string::npos);
}

TEST(KernelDecompressor, NamesUnknownAndUnsupportedFormats) {
  Bytes unknown = with_size(Bytes(64, std::byte{0x42}), 100);
  auto result = decompress_kernel_payload(unknown, 1 << 20);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().code(), ErrorCode::kUnsupported);
  Bytes lzo = testing::to_bytes("\x89LZO\x00\r\n\x1a\n plus data");
  auto lzo_result = decompress_kernel_payload(with_size(lzo, 100), 1 << 20);
  ASSERT_FALSE(lzo_result.has_value());
  EXPECT_EQ(lzo_result.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(lzo_result.error().message().find("LZO"), std::string::npos);
  EXPECT_FALSE(decompress_kernel_payload(Bytes(3), 1 << 20).has_value());
}

}  // namespace
}  // namespace lamina::machine
