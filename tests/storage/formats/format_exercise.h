#pragma once
// Drives one image file through a format's whole read-only surface (open, inspect, bounded
// reads) for the robustness test and the libFuzzer targets. Errors are expected and ignored;
// a crash, a sanitizer report or a hang is the failure being looked for.

#include <cstdint>
#include <filesystem>

namespace lamina::storage::testing {

enum class ImageFormat { kQcow2, kVmdk, kVhdx };

// Returns true when the image opened (so callers can check mutations do not all fail).
bool exercise_image(const std::filesystem::path& path, ImageFormat format, uint64_t seed);

}  // namespace lamina::storage::testing
