#pragma once
// PNG encoding of a Frame (ISO/IEC 15948, the PNG specification): 8-bit RGB, no interlace, one
// zlib stream in IDAT chunks, with zlib's deflate and CRC-32. Used for screenshots.
//
// Stateless functions; thread-safe.

#include <cstddef>
#include <filesystem>
#include <vector>

#include "base/error.h"
#include "hw/display/frame.h"

namespace lamina::display {

// kInvalidArgument for an empty frame or one whose pixel count does not match its size.
Result<std::vector<std::byte>> encode_png(const hw::Frame& frame);
// encode_png, written to `path` (kIo naming the path).
Result<void> write_png(const hw::Frame& frame, const std::filesystem::path& path);

}  // namespace lamina::display
