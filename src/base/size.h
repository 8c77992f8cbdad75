#pragma once
// Parsing and printing byte sizes as users write them: "512", "256M", "4G", "1.5T" is rejected.

#include <cstdint>
#include <string>
#include <string_view>

#include "base/error.h"

namespace lamina {

// Accepts a whole number with an optional binary suffix K, M, G, T (or KiB/MiB/GiB/TiB, or a
// trailing B). Rejects empty input, fractions, negative numbers and values that overflow.
Result<uint64_t> parse_size(std::string_view text);

// Prints the largest exact binary unit: 268435456 -> "256M"; 1000 -> "1000".
std::string format_size(uint64_t bytes);

}  // namespace lamina
