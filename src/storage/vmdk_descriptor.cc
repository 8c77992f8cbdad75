#include "storage/vmdk_descriptor.h"

#include <fmt/format.h>
#include <charconv>

namespace lamina::storage {

namespace {

std::string_view trim(std::string_view text) {
  size_t first = text.find_first_not_of(" \t\r");
  if (first == std::string_view::npos) return {};
  size_t last = text.find_last_not_of(" \t\r");
  return text.substr(first, last - first + 1);
}

std::string_view unquote(std::string_view text) {
  text = trim(text);
  if (text.size() >= 2 && text.front() == '"' && text.back() == '"')
    return text.substr(1, text.size() - 2);
  return text;
}

bool parse_number(std::string_view text, uint64_t& value) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() && !text.empty();
}

// Splits off the next whitespace-separated token.
std::string_view next_token(std::string_view& rest) {
  rest = trim(rest);
  size_t end = rest.find_first_of(" \t");
  std::string_view token = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end);
  return token;
}

Result<VmdkExtentLine> parse_extent(std::string_view line, std::string_view file_name,
                                    size_t line_number) {
  auto bad = [&](std::string_view why) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: descriptor line {}: {}", file_name, line_number, why));
  };
  VmdkExtentLine extent;
  std::string_view rest = line;
  std::string_view access = next_token(rest);
  if (access == "NOACCESS") {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: descriptor line {}: NOACCESS extents are not supported", file_name,
                            line_number));
  }
  extent.writable = access == "RW";
  if (!parse_number(next_token(rest), extent.sectors) || extent.sectors == 0 ||
      extent.sectors > (1ull << 50)) {
    return bad("extent size is not a valid sector count");
  }
  std::string_view type = next_token(rest);
  if (type == "SPARSE") {
    extent.type = VmdkExtentType::kSparse;
  } else if (type == "FLAT" || type == "VMFS") {
    extent.type = VmdkExtentType::kFlat;
  } else if (type == "ZERO") {
    extent.type = VmdkExtentType::kZero;
    return extent;
  } else {
    return fail(ErrorCode::kUnsupported,
                fmt::format("{}: descriptor line {}: extent type '{}' is not supported", file_name,
                            line_number, type));
  }
  rest = trim(rest);
  if (rest.empty() || rest.front() != '"') return bad("extent file name is missing or not quoted");
  size_t close = rest.find('"', 1);
  if (close == std::string_view::npos || close == 1)
    return bad("extent file name is not closed or empty");
  extent.file = std::string(rest.substr(1, close - 1));
  rest = trim(rest.substr(close + 1));
  if (!rest.empty()) {
    std::string_view offset = next_token(rest);
    if (!parse_number(offset, extent.offset_sectors) || extent.offset_sectors > (1ull << 50)) {
      return bad("extent offset is not a valid sector count");
    }
  }
  return extent;
}

}  // namespace

Result<VmdkDescriptor> parse_vmdk_descriptor(std::string_view text, std::string_view file_name) {
  if (text.size() > kMaxVmdkDescriptorBytes) {
    return fail(ErrorCode::kCorrupt, fmt::format("{}: descriptor is larger than 1 MiB", file_name));
  }
  // An embedded descriptor is padded with zeros up to its sector count.
  text = text.substr(0, text.find('\0'));
  VmdkDescriptor descriptor;
  bool seen_header = false;
  size_t line_number = 0;
  while (!text.empty()) {
    size_t end = text.find('\n');
    std::string_view line = trim(text.substr(0, end));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
    ++line_number;
    if (line.empty()) continue;
    if (line.front() == '#') {
      if (line.find("Disk DescriptorFile") != std::string_view::npos) seen_header = true;
      continue;
    }
    if (line.starts_with("RW ") || line.starts_with("RDONLY ") || line.starts_with("NOACCESS ")) {
      if (descriptor.extents.size() >= kMaxVmdkExtents) {
        return fail(ErrorCode::kCorrupt,
                    fmt::format("{}: descriptor lists too many extents", file_name));
      }
      auto extent = parse_extent(line, file_name, line_number);
      if (!extent) return fail(extent.error());
      descriptor.extents.push_back(std::move(*extent));
      continue;
    }
    size_t equals = line.find('=');
    if (equals == std::string_view::npos) {
      return fail(ErrorCode::kCorrupt,
                  fmt::format("{}: descriptor line {} is neither a setting nor an extent",
                              file_name, line_number));
    }
    std::string_view key = trim(line.substr(0, equals));
    std::string_view value = unquote(line.substr(equals + 1));
    if (key == "createType") {
      descriptor.create_type = std::string(value);
    } else if (key == "parentCID") {
      descriptor.has_parent = value != "ffffffff" && value != "FFFFFFFF";
    } else if (key == "parentFileNameHint") {
      descriptor.parent_file_name_hint = std::string(value);
    }
  }
  if (!seen_header && descriptor.create_type.empty()) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("{}: not a VMDK descriptor (no createType)", file_name));
  }
  return descriptor;
}

}  // namespace lamina::storage
