#pragma once
// JSON to text that never throws: strings that are not valid UTF-8 (a path or name a client or
// a guest chose) are written with U+FFFD in place of the bad bytes. Every dump of a value that
// may hold outside text goes through here. Stateless; thread-safe.

#include <string>

#include <nlohmann/json.hpp>

namespace lamina {

inline std::string json_text(const nlohmann::json& value, int indent = -1) {
  return value.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace lamina
