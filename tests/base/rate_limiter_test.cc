#include "base/log.h"

#include <gtest/gtest.h>

#include <thread>

namespace lamina {
namespace {

TEST(RateLimiter, AllowsABurstThenCountsSuppressed) {
  RateLimiter limiter(3, std::chrono::hours(1));
  EXPECT_TRUE(limiter.allow());
  EXPECT_TRUE(limiter.allow());
  EXPECT_TRUE(limiter.allow());
  EXPECT_FALSE(limiter.allow());
  EXPECT_FALSE(limiter.allow());
  EXPECT_EQ(limiter.suppressed(), 2u);
}

TEST(RateLimiter, OpensAgainAfterThePeriod) {
  RateLimiter limiter(1, std::chrono::milliseconds(20));
  EXPECT_TRUE(limiter.allow());
  EXPECT_FALSE(limiter.allow());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_TRUE(limiter.allow());
}

}  // namespace
}  // namespace lamina
