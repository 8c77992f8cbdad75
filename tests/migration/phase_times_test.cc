// PhaseTimes: the switchover breakdown, its order and the checks on a peer's list.
#include "migration/phase_times.h"

#include <gtest/gtest.h>

#include <thread>

namespace lamina::migration {
namespace {

TEST(PhaseTimesTest, MarksAreThePhasesInOrderWithTheirDurations) {
  PhaseTimes times;
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  times.mark("quiesce");
  times.mark("last_pages");
  ASSERT_EQ(times.phases().size(), 2u);
  EXPECT_EQ(times.phases()[0].name, "quiesce");
  EXPECT_GE(times.phases()[0].microseconds, 2000u);
  EXPECT_LT(times.phases()[1].microseconds, times.phases()[0].microseconds);
  EXPECT_EQ(times.total_microseconds(),
            times.phases()[0].microseconds + times.phases()[1].microseconds);
}

TEST(PhaseTimesTest, RoundTripsThroughJsonAndAppendsWithAPrefix) {
  auto theirs = PhaseTimes::from_json(nlohmann::json::parse(
      R"([{"phase": "grants", "us": 300}, {"phase": "worker.sandbox", "us": 900}])"));
  ASSERT_TRUE(theirs) << theirs.error().message();
  PhaseTimes ours;
  ours.mark("quiesce");
  ours.append(*theirs, "destination.");
  const nlohmann::json listed = ours.to_json();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[1], nlohmann::json({{"phase", "destination.grants"}, {"us", 300}}));
  EXPECT_EQ(listed[2], nlohmann::json({{"phase", "destination.worker.sandbox"}, {"us", 900}}));
  auto again = PhaseTimes::from_json(listed);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->to_json(), listed);
}

TEST(PhaseTimesTest, APeersHostileListIsRefusedWhole) {
  const char* hostile[] = {
      R"({"phase": "x", "us": 1})",             // not a list
      R"([{"phase": "x"}])",                    // no duration
      R"([{"phase": "x", "us": -1}])",          // negative
      R"([{"phase": "x", "us": 1.5}])",         // not whole
      R"([{"phase": "x", "us": 3600000001}])",  // over an hour
      R"([{"phase": "", "us": 1}])",            // no name
      R"([{"phase": "Quiesce", "us": 1}])",     // outside [a-z0-9_.]
      R"([{"phase": "a b", "us": 1}])",
      R"([{"phase": "x\n", "us": 1}])",
      R"([{"phase": 7, "us": 1}])",
      R"([[1, 2]])",
  };
  for (const char* text : hostile) {
    EXPECT_FALSE(PhaseTimes::from_json(nlohmann::json::parse(text))) << text;
  }
  EXPECT_FALSE(PhaseTimes::from_json(
      nlohmann::json::array({{{"phase", std::string(PhaseTimes::kMaxName + 1, 'a')}, {"us", 1}}})));
  nlohmann::json many = nlohmann::json::array();
  for (size_t i = 0; i <= PhaseTimes::kMaxPhases; ++i) many.push_back({{"phase", "x"}, {"us", 1}});
  EXPECT_FALSE(PhaseTimes::from_json(many));
}

TEST(PhaseTimesTest, AppendingStopsAtTheLimit) {
  nlohmann::json full = nlohmann::json::array();
  for (size_t i = 0; i < PhaseTimes::kMaxPhases; ++i) full.push_back({{"phase", "x"}, {"us", 1}});
  auto theirs = PhaseTimes::from_json(full);
  ASSERT_TRUE(theirs);
  PhaseTimes ours;
  ours.mark("quiesce");
  ours.append(*theirs, "destination.");
  EXPECT_EQ(ours.phases().size(), PhaseTimes::kMaxPhases);
  EXPECT_EQ(ours.phases().front().name, "quiesce");
}

}  // namespace
}  // namespace lamina::migration
