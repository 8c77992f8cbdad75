#pragma once
// Decompression of one compressed cluster or grain with zlib: qcow2 stores raw deflate streams
// (qcow2 spec, "Compressed Clusters Descriptor"), VMDK stream-optimized grains are zlib streams
// (VMDK 1.1 spec, "Stream-Optimized Compressed Sparse Extents").

#include <cstddef>
#include <span>

#include "base/error.h"

namespace lamina::storage {

enum class InflateFormat { kRawDeflate, kZlib };

// Inflates input into output and returns how many bytes it produced. Never writes past
// output; a stream that would produce more than output holds, or that is malformed, is
// kCorrupt (the caller adds which file and which cluster).
Result<size_t> inflate_into(std::span<const std::byte> input, std::span<std::byte> output,
                            InflateFormat format);

}  // namespace lamina::storage
