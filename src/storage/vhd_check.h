#pragma once
// Checking a VHD file's structure and repairing what is safe to repair: a missing or damaged
// footer (restored from its other copy), and BAT entries pointing past the end of the file
// (cleared: their data was never written). Overlapping blocks, bad headers and missing parents
// are reported, never "fixed" by guessing.

#include <string>

#include "storage/image_format.h"

namespace lamina::storage {

// access: --force-share (without --repair) and the reference policy for the parent.
Result<CheckReport> check_vhd(const std::string& path, bool repair, const ImageAccess& access = {});

}  // namespace lamina::storage
