#pragma once
// An ImageInfo as JSON: the shape `lamina disk info --json` prints and laminad's
// GET /v1/disks/info answers (path, format, virtual_size, file_size, the format's own fields,
// warnings, backing_chain). Stateless; thread-safe.

#include <nlohmann/json.hpp>

#include "storage/image_format.h"

namespace lamina::storage {

nlohmann::json image_info_json(const ImageInfo& info);

}  // namespace lamina::storage
