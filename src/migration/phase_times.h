#pragma once
// PhaseTimes: where a live migration's switchover spent its time, as named phases in the
// order they ran, each timed in microseconds by the process that ran it (the source worker,
// the destination laminad, the destination worker; no clock is compared across processes).
// The source reports them with the migration's outcome (`lamina vm migrate --json`'s
// "switchover"), the destination's after its own in the kStarted answer.
//
// A peer's list is hostile input: from_json() takes at most kMaxPhases entries with short
// names of [a-z0-9_.] and durations up to an hour, or refuses the whole list.
//
// Value type; not synchronized (one thread marks at a time).

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace lamina::migration {

class PhaseTimes {
 public:
  using Clock = std::chrono::steady_clock;
  struct Phase {
    std::string name;
    uint64_t microseconds = 0;
  };
  static constexpr size_t kMaxPhases = 32;
  static constexpr size_t kMaxName = 48;

  // The first phase begins now.
  PhaseTimes() : mark_(Clock::now()) {}

  // Ends the phase that began at the last mark (or at construction) and names it.
  void mark(std::string_view name);
  // Appends `other`'s phases, each name prefixed with `prefix` (e.g. "destination."), as far
  // as kMaxPhases allows. Appended phases are nested: they ran inside the phase that waited
  // for them (the destination's inside the source's destination_answer).
  void append(const PhaseTimes& other, std::string_view prefix);

  const std::vector<Phase>& phases() const { return phases_; }
  // The sum of every phase: the elapsed time only when nothing was appended.
  uint64_t total_microseconds() const;

  // [{"phase": NAME, "us": MICROSECONDS}, ...]
  nlohmann::json to_json() const;
  [[nodiscard]] static Result<PhaseTimes> from_json(const nlohmann::json& list);

 private:
  void add(std::string name, uint64_t microseconds);

  Clock::time_point mark_;
  std::vector<Phase> phases_;
};

}  // namespace lamina::migration
