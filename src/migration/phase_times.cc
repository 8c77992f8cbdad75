#include "migration/phase_times.h"

#include <fmt/format.h>

#include <algorithm>

namespace lamina::migration {
namespace {

constexpr uint64_t kMaxMicroseconds = uint64_t{3600} * 1000 * 1000;

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= PhaseTimes::kMaxName &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
         });
}

}  // namespace

void PhaseTimes::mark(std::string_view name) {
  const auto now = Clock::now();
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(now - mark_).count();
  mark_ = now;
  add(std::string(name), static_cast<uint64_t>(std::max<int64_t>(0, elapsed)));
}

void PhaseTimes::append(const PhaseTimes& other, std::string_view prefix) {
  for (const Phase& phase : other.phases_)
    add(std::string(prefix) + phase.name, phase.microseconds);
}

void PhaseTimes::add(std::string name, uint64_t microseconds) {
  if (phases_.size() >= kMaxPhases) return;
  phases_.push_back({std::move(name), std::min(microseconds, kMaxMicroseconds)});
}

uint64_t PhaseTimes::total_microseconds() const {
  uint64_t total = 0;
  for (const Phase& phase : phases_) total += phase.microseconds;
  return total;
}

nlohmann::json PhaseTimes::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const Phase& phase : phases_)
    list.push_back({{"phase", phase.name}, {"us", phase.microseconds}});
  return list;
}

Result<PhaseTimes> PhaseTimes::from_json(const nlohmann::json& list) {
  if (!list.is_array() || list.size() > kMaxPhases) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("switchover phases: a list of up to {} entries", kMaxPhases));
  }
  PhaseTimes times;
  for (const auto& entry : list) {
    // A whole number: parsed text makes it unsigned, a json built in memory signed.
    if (!entry.is_object() || !entry.contains("phase") || !entry["phase"].is_string() ||
        !entry.contains("us") || !entry["us"].is_number_integer() ||
        (!entry["us"].is_number_unsigned() && entry["us"].get<int64_t>() < 0) ||
        !valid_name(entry["phase"].get_ref<const std::string&>()) ||
        entry["us"].get<uint64_t>() > kMaxMicroseconds) {
      return fail(ErrorCode::kInvalidArgument,
                  "switchover phases: each entry is {\"phase\": a short name of a-z, 0-9, _ "
                  "and ., \"us\": microseconds up to an hour}");
    }
    times.add(entry["phase"].get<std::string>(), entry["us"].get<uint64_t>());
  }
  return times;
}

}  // namespace lamina::migration
