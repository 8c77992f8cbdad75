#include "mgmt/resource_service.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "base/size.h"
#include "net/switch_protocol.h"
#include "net/switch_query.h"
#include "storage/image_format.h"
#include "storage/image_info_json.h"
#include "storage/image_operations.h"

namespace lamina::mgmt {
namespace {

ServiceError bad(std::string field, std::string message) {
  return {400, std::move(field), std::move(message)};
}

// Storage errors as API errors: a missing file is 404, an image in use 409, a corrupt or
// refused one 422, the host's I/O failure 500.
ServiceError storage_error(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kNotFound: return {404, "path", error.message()};
    case ErrorCode::kIo: return {500, "path", error.message()};
    case ErrorCode::kInvalidArgument:
      if (error.message().find("in use") != std::string::npos)
        return {409, "path", error.message()};
      return {422, "path", error.message()};
    default: return {422, "path", error.message()};
  }
}

ServiceResult<std::string> absolute_path(const nlohmann::json& body, const char* field,
                                         bool required) {
  if (!body.contains(field)) {
    if (required) return std::unexpected(bad(field, "is required"));
    return std::string();
  }
  if (!body[field].is_string()) return std::unexpected(bad(field, "must be a string"));
  const std::string path = body[field].get<std::string>();
  if (path.empty() || path.front() != '/') {
    return std::unexpected(bad(field, "must be an absolute path"));
  }
  return path;
}

}  // namespace

ServiceResult<nlohmann::json> create_disk(const nlohmann::json& body) {
  if (!body.is_object()) return std::unexpected(bad("", "the body must be a JSON object"));
  for (const auto& [key, value] : body.items()) {
    static constexpr std::array<std::string_view, 5> kFields = {"path", "size", "format", "type",
                                                                "parent"};
    if (std::find(kFields.begin(), kFields.end(), key) == kFields.end()) {
      return std::unexpected(bad(key, "unknown field"));
    }
  }
  auto path = absolute_path(body, "path", true);
  if (!path) return std::unexpected(path.error());
  auto parent = absolute_path(body, "parent", false);
  if (!parent) return std::unexpected(parent.error());
  std::error_code error;
  if (std::filesystem::exists(std::filesystem::symlink_status(*path, error))) {
    return std::unexpected(ServiceError{409, "path", fmt::format("{} exists", *path)});
  }
  if (!parent->empty()) {
    if (body.contains("size") || body.contains("format") || body.contains("type")) {
      return std::unexpected(bad("parent",
                                 "a differencing disk takes its size and format from "
                                 "the parent"));
    }
    if (auto made = storage::create_differencing(*path, *parent, /*overwrite=*/false); !made) {
      return std::unexpected(storage_error(made.error()));
    }
  } else {
    if (!body.contains("size") || !body["size"].is_string()) {
      return std::unexpected(bad("size", "is required, e.g. \"10G\""));
    }
    auto size = parse_size(body["size"].get<std::string>());
    if (!size || *size == 0) return std::unexpected(bad("size", "is not a size, e.g. \"10G\""));
    const std::string format = body.value("format", "vhdx");
    if (format != "vhdx" && format != "vhd" && format != "raw") {
      return std::unexpected(bad("format", "must be vhdx, vhd or raw"));
    }
    storage::CreateOptions options;
    options.size = *size;
    if (body.contains("type")) {
      if (!body["type"].is_string() || (body["type"] != "dynamic" && body["type"] != "fixed")) {
        return std::unexpected(bad("type", "must be dynamic or fixed"));
      }
      options.type = body["type"].get<std::string>();
    }
    if (auto made = storage::create_image(*path, format, options, /*overwrite=*/false); !made) {
      return std::unexpected(storage_error(made.error()));
    }
  }
  return inspect_disk(*path, false);
}

ServiceResult<nlohmann::json> inspect_disk(const std::string& path, bool force_share) {
  if (path.empty() || path.front() != '/') {
    return std::unexpected(bad("path", "must be an absolute path"));
  }
  storage::ImageAccess access;
  access.force_share = force_share;
  auto format = storage::detect_format(path, access);
  if (!format) return std::unexpected(storage_error(format.error()));
  auto info = storage::inspect_image(**format, path, access);
  if (!info) return std::unexpected(storage_error(info.error()));
  return storage::image_info_json(*info);
}

ServiceResult<nlohmann::json> list_switches() {
  auto switches = net::list_switches();
  if (!switches) return std::unexpected(ServiceError{500, "", switches.error().message()});
  nlohmann::json list = nlohmann::json::array();
  for (const net::SwitchStatus& status : *switches) list.push_back(net::status_json(status));
  return nlohmann::json{{"switches", list}};
}

ServiceResult<nlohmann::json> get_switch(const std::string& name) {
  auto status = net::query_switch(name);
  if (!status) {
    if (status.error().code() == ErrorCode::kNotFound) {
      return std::unexpected(
          ServiceError{404, "name", fmt::format("no switch named {} runs", name)});
    }
    if (status.error().code() == ErrorCode::kInvalidArgument) {
      return std::unexpected(bad("name", status.error().message()));
    }
    return std::unexpected(ServiceError{500, "", status.error().message()});
  }
  return net::status_json(*status);
}

}  // namespace lamina::mgmt
