#include "base/size.h"

#include <cctype>
#include <charconv>
#include <fmt/format.h>

namespace lamina {

Result<uint64_t> parse_size(std::string_view text) {
  auto invalid = [&](std::string_view why) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("invalid size '{}': {} (examples: 512M, 4G, 1073741824)", text, why));
  };
  if (text.empty()) return invalid("empty");
  uint64_t number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec == std::errc::result_out_of_range) return invalid("too large");
  if (ec != std::errc() || end == text.data()) return invalid("must start with a whole number");

  std::string suffix;
  for (const char* p = end; p != text.data() + text.size(); ++p) {
    suffix += static_cast<char>(std::toupper(static_cast<unsigned char>(*p)));
  }
  unsigned shift = 0;
  if (suffix.empty() || suffix == "B") shift = 0;
  else if (suffix == "K" || suffix == "KB" || suffix == "KIB") shift = 10;
  else if (suffix == "M" || suffix == "MB" || suffix == "MIB") shift = 20;
  else if (suffix == "G" || suffix == "GB" || suffix == "GIB") shift = 30;
  else if (suffix == "T" || suffix == "TB" || suffix == "TIB") shift = 40;
  else return invalid("unknown unit '" + suffix + "'");

  if (shift != 0 && number > (UINT64_MAX >> shift)) return invalid("too large");
  return number << shift;
}

std::string format_size(uint64_t bytes) {
  static constexpr struct {
    unsigned shift;
    char unit;
  } kUnits[] = {{40, 'T'}, {30, 'G'}, {20, 'M'}, {10, 'K'}};
  if (bytes != 0) {
    for (const auto& unit : kUnits) {
      uint64_t mask = (uint64_t{1} << unit.shift) - 1;
      if ((bytes & mask) == 0) return fmt::format("{}{}", bytes >> unit.shift, unit.unit);
    }
  }
  return std::to_string(bytes);
}

}  // namespace lamina
