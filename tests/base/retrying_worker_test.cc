#include "base/retrying_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

namespace lamina {
namespace {

using namespace std::chrono_literals;

struct Finished {
  bool ok = false;
  int tries = 0;
};

TEST(RetryingWorkerTest, RetriesUntilTheJobSucceeds) {
  RetryingWorker worker(5, 1ms);
  int calls = 0;
  std::promise<Finished> finished;
  worker.post(
      [&]() -> Result<void> {
        if (++calls < 3) return fail(ErrorCode::kIo, "not yet");
        return {};
      },
      [&](const Result<void>& last, int tries) { finished.set_value({last.has_value(), tries}); });
  const Finished outcome = finished.get_future().get();
  EXPECT_TRUE(outcome.ok);
  EXPECT_EQ(outcome.tries, 3);
}

TEST(RetryingWorkerTest, GivesUpAfterItsAttemptsOrAtOnceWhenNothingIsLeftToDo) {
  RetryingWorker worker(4, 1ms);
  std::promise<Finished> failing, gone;
  worker.post([]() -> Result<void> { return fail(ErrorCode::kIo, "never"); },
              [&](const Result<void>& last, int tries) { failing.set_value({last.has_value(), tries}); });
  worker.post([]() -> Result<void> { return fail(ErrorCode::kNotFound, "the card went"); },
              [&](const Result<void>& last, int tries) { gone.set_value({last.has_value(), tries}); });
  const Finished first = failing.get_future().get();
  EXPECT_FALSE(first.ok);
  EXPECT_EQ(first.tries, 4);
  const Finished second = gone.get_future().get();
  EXPECT_FALSE(second.ok);
  EXPECT_EQ(second.tries, 1);
}

TEST(RetryingWorkerTest, JobsRunOneAfterAnotherInOrder) {
  RetryingWorker worker(1, 1ms);
  std::vector<int> order;
  std::promise<void> last;
  for (int i = 0; i < 5; ++i) {
    worker.post([&order, i]() -> Result<void> { order.push_back(i); return {}; },
                [&last, i](const Result<void>&, int) { if (i == 4) last.set_value(); });
  }
  last.get_future().get();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(RetryingWorkerTest, StopCutsAPauseShortAndDropsTheRest) {
  RetryingWorker worker(100, 10s);
  std::atomic<int> calls = 0;
  std::atomic<bool> done_called = false;
  worker.post([&]() -> Result<void> { ++calls; return fail(ErrorCode::kIo, "down"); },
              [&](const Result<void>&, int) { done_called = true; });
  while (calls.load() == 0) std::this_thread::sleep_for(1ms);
  const auto started = std::chrono::steady_clock::now();
  worker.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_FALSE(done_called.load());
  worker.post([&]() -> Result<void> { ++calls; return {}; }, {});
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(calls.load(), 1) << "a job posted after stop() ran";
}

}  // namespace
}  // namespace lamina
