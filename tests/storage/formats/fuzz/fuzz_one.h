#pragma once
// Shared body of the libFuzzer targets: the input bytes become an image file (a memfd, so no
// disk I/O) that exercise_image drives through one format's parser.

#include <cstddef>
#include <cstdint>

#include "format_exercise.h"

namespace lamina::storage::testing {

void fuzz_one(const uint8_t* data, size_t size, ImageFormat format);

}  // namespace lamina::storage::testing
