#include "storage/inflate.h"

#include <fmt/format.h>
#include <zlib.h>
#include <climits>

namespace lamina::storage {

Result<size_t> inflate_into(std::span<const std::byte> input, std::span<std::byte> output,
                            InflateFormat format) {
  if (input.size() > UINT_MAX || output.size() > UINT_MAX) {
    return fail(ErrorCode::kCorrupt, "compressed unit is too large");
  }
  z_stream stream{};
  // Negative window bits select a raw deflate stream without the zlib header.
  int window_bits = format == InflateFormat::kRawDeflate ? -15 : 15;
  if (inflateInit2(&stream, window_bits) != Z_OK) {
    return fail(ErrorCode::kInternal, "zlib could not start a decompressor");
  }
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(input.data()));
  stream.avail_in = static_cast<uInt>(input.size());
  stream.next_out = reinterpret_cast<Bytef*>(output.data());
  stream.avail_out = static_cast<uInt>(output.size());
  int status = inflate(&stream, Z_FINISH);
  size_t produced = output.size() - stream.avail_out;
  inflateEnd(&stream);
  // Z_BUF_ERROR with a full output means the stream wants to produce more than a cluster;
  // with input left it is a truncated stream. qemu pads compressed clusters, so running out
  // of input after a full output is accepted (Z_BUF_ERROR, avail_out == 0).
  if (status == Z_STREAM_END) return produced;
  if (status == Z_BUF_ERROR && produced == output.size()) return produced;
  return fail(ErrorCode::kCorrupt,
              fmt::format("compressed data does not inflate (zlib status {}, {} of {} bytes)",
                          status, produced, output.size()));
}

}  // namespace lamina::storage
