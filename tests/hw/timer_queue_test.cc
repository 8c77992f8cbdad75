#include "hw/timer_queue.h"

#include <gtest/gtest.h>

#include <memory>

namespace lamina::hw {
namespace {

TEST(TimerQueue, FiresOnlyExpiredTimersInDeadlineOrder) {
  ManualClock clock;
  TimerQueue queue(clock);
  std::vector<int> order;
  Timer late(queue, [&](uint64_t) { order.push_back(2); });
  Timer early(queue, [&](uint64_t) { order.push_back(1); });
  late.arm_at(200);
  early.arm_at(100);
  EXPECT_EQ(queue.next_deadline(), 100u);
  clock.set(99);
  EXPECT_EQ(queue.run_expired(), 0u);
  clock.set(250);
  EXPECT_EQ(queue.run_expired(), 2u);
  EXPECT_EQ(order, (std::vector<int>{1, 2}));
  EXPECT_FALSE(queue.next_deadline().has_value());
  EXPECT_FALSE(early.armed());
}

TEST(TimerQueue, CancelAndRearmReplaceTheDeadline) {
  ManualClock clock;
  TimerQueue queue(clock);
  int fired = 0;
  Timer timer(queue, [&](uint64_t) { ++fired; });
  timer.arm_at(10);
  timer.arm_at(50);
  clock.set(20);
  EXPECT_EQ(queue.run_expired(), 0u);
  timer.cancel();
  clock.set(100);
  EXPECT_EQ(queue.run_expired(), 0u);
  EXPECT_EQ(fired, 0);
}

TEST(TimerQueue, APeriodicTimerFiresOncePerServiceEvenWhenLate) {
  ManualClock clock;
  TimerQueue queue(clock);
  int fired = 0;
  std::unique_ptr<Timer> timer;
  timer = std::make_unique<Timer>(queue, [&](uint64_t now) {
    ++fired;
    timer->arm_at(now + 1);  // already due again; must wait for the next service
  });
  timer->arm_at(1);
  clock.set(1000);
  EXPECT_EQ(queue.run_expired(), 1u);
  EXPECT_EQ(queue.run_expired(), 0u);  // deadline 1001 is still in the future
  clock.advance(1);
  EXPECT_EQ(queue.run_expired(), 1u);
  EXPECT_EQ(fired, 2);
}

TEST(TimerQueue, WakeupSignalsANewEarliestDeadline) {
  ManualClock clock;
  TimerQueue queue(clock);
  int wakeups = 0;
  queue.set_wakeup([&] { ++wakeups; });
  Timer a(queue, [](uint64_t) {});
  Timer b(queue, [](uint64_t) {});
  a.arm_at(100);
  EXPECT_EQ(wakeups, 1);
  b.arm_at(200);  // later: the sleeper's deadline still stands
  EXPECT_EQ(wakeups, 1);
  b.arm_at(50);
  EXPECT_EQ(wakeups, 2);
}

TEST(TimerQueue, ACallbackMayDestroyAnotherDueTimer) {
  ManualClock clock;
  TimerQueue queue(clock);
  auto victim = std::make_unique<Timer>(queue, [](uint64_t) { FAIL() << "destroyed timer ran"; });
  Timer killer(queue, [&](uint64_t) { victim.reset(); });
  killer.arm_at(1);
  victim->arm_at(2);
  clock.set(5);
  EXPECT_EQ(queue.run_expired(), 1u);
}

TEST(TimerQueue, DestroyingAnArmedTimerRemovesIt) {
  ManualClock clock;
  TimerQueue queue(clock);
  {
    Timer timer(queue, [](uint64_t) {});
    timer.arm_at(10);
  }
  EXPECT_FALSE(queue.next_deadline().has_value());
}

TEST(ClockConversions, AreExactAndRoundDeadlinesUp) {
  EXPECT_EQ(ns_to_ticks(1'000'000'000, 1193182), 1193182u);
  EXPECT_EQ(ns_to_ticks(838, 1193182), 0u);
  EXPECT_EQ(ns_to_ticks(839, 1193182), 1u);
  EXPECT_EQ(ticks_to_ns(1, 1193182), 839u);
  // A day at 10 MHz does not overflow.
  EXPECT_EQ(ns_to_ticks(86400ull * 1'000'000'000, 10'000'000), 864'000'000'000u);
  for (uint64_t ticks : {1ull, 7ull, 65536ull, 123456789ull}) {
    EXPECT_GE(ns_to_ticks(ticks_to_ns(ticks, 3579545), 3579545), ticks);
  }
}

}  // namespace
}  // namespace lamina::hw
