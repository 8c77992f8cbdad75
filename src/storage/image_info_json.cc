#include "storage/image_info_json.h"

#include <variant>

namespace lamina::storage {

nlohmann::json image_info_json(const ImageInfo& info) {
  nlohmann::json json;
  json["path"] = info.path;
  json["format"] = info.format;
  json["virtual_size"] = info.virtual_size;
  json["file_size"] = info.file_size;
  for (const auto& field : info.fields) {
    std::visit([&](const auto& value) { json[field.key] = value; }, field.value);
  }
  json["warnings"] = info.warnings;
  if (!info.backing_chain.empty()) {
    json["backing_chain"] = nlohmann::json::array();
    for (const auto& parent : info.backing_chain) {
      json["backing_chain"].push_back(image_info_json(parent));
    }
  }
  return json;
}

}  // namespace lamina::storage
