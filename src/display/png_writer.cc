#include "display/png_writer.h"

#include <zlib.h>

#include <cstring>
#include <fstream>

#include <fmt/format.h>

namespace lamina::display {
namespace {

void put_be32(std::vector<std::byte>& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::byte>((value >> shift) & 0xff));
  }
}

// PNG spec section 5.3: length, type, data, CRC-32 over type and data.
void put_chunk(std::vector<std::byte>& out, const char (&type)[5], const std::byte* data,
               size_t size) {
  put_be32(out, static_cast<uint32_t>(size));
  const size_t type_at = out.size();
  for (int index = 0; index < 4; ++index) out.push_back(static_cast<std::byte>(type[index]));
  out.insert(out.end(), data, data + size);
  const uLong crc =
      ::crc32(0, reinterpret_cast<const Bytef*>(out.data() + type_at), static_cast<uInt>(size + 4));
  put_be32(out, static_cast<uint32_t>(crc));
}

}  // namespace

Result<std::vector<std::byte>> encode_png(const hw::Frame& frame) {
  if (frame.width == 0 || frame.height == 0 ||
      frame.pixels.size() != size_t{frame.width} * frame.height) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("no picture to encode ({}x{} with {} pixels)", frame.width,
                            frame.height, frame.pixels.size()));
  }
  // Scanlines with filter type 0 (None) before each (PNG spec section 9.2).
  const size_t row_bytes = size_t{frame.width} * 3 + 1;
  std::vector<Bytef> raw(row_bytes * frame.height);
  for (uint32_t y = 0; y < frame.height; ++y) {
    Bytef* row = raw.data() + y * row_bytes;
    row[0] = 0;
    const uint32_t* pixel = &frame.pixels[size_t{y} * frame.width];
    for (uint32_t x = 0; x < frame.width; ++x) {
      row[1 + x * 3] = static_cast<Bytef>(pixel[x] >> 16);
      row[2 + x * 3] = static_cast<Bytef>(pixel[x] >> 8);
      row[3 + x * 3] = static_cast<Bytef>(pixel[x]);
    }
  }
  uLongf compressed_size = ::compressBound(static_cast<uLong>(raw.size()));
  std::vector<std::byte> compressed(compressed_size);
  if (::compress2(reinterpret_cast<Bytef*>(compressed.data()), &compressed_size, raw.data(),
                  static_cast<uLong>(raw.size()), 6) != Z_OK) {
    return fail(ErrorCode::kInternal, "zlib could not compress the picture");
  }
  compressed.resize(compressed_size);

  std::vector<std::byte> out;
  static constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  for (uint8_t byte : kSignature) out.push_back(static_cast<std::byte>(byte));
  // IHDR (section 11.2.2): width, height, bit depth 8, colour type 2 (RGB), deflate, adaptive
  // filtering, no interlace.
  std::vector<std::byte> header;
  put_be32(header, frame.width);
  put_be32(header, frame.height);
  for (uint8_t byte : {8, 2, 0, 0, 0}) header.push_back(static_cast<std::byte>(byte));
  put_chunk(out, "IHDR", header.data(), header.size());
  put_chunk(out, "IDAT", compressed.data(), compressed.size());
  put_chunk(out, "IEND", nullptr, 0);
  return out;
}

Result<void> write_png(const hw::Frame& frame, const std::filesystem::path& path) {
  auto png = encode_png(frame);
  if (!png) return fail(png.error().with_context(path.string()));
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file.write(reinterpret_cast<const char*>(png->data()), static_cast<std::streamsize>(png->size()));
  file.close();
  if (!file) return fail(ErrorCode::kIo, fmt::format("cannot write {}", path.string()));
  return {};
}

}  // namespace lamina::display
