// Crash consistency of VHDX resize and merge: a process running them is killed with SIGKILL at
// random points; afterwards the image opens (replaying its log) and reads as it did before or
// after the operation in flight, and an interrupted merge can be run again to completion.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "image_test_support.h"
#include "storage/image_format.h"
#include "storage/image_operations.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::TempDir;

constexpr uint64_t kMiB = 1u << 20;
constexpr uint64_t kInitialSize = 40 * kMiB;
// Grow, shrink into a block, grow, ... (the shrink drops data for good).
constexpr uint64_t kSizes[] = {64 * kMiB, 20 * kMiB + 512, 48 * kMiB, 12 * kMiB + 4096,
                               72 * kMiB, 20 * kMiB, 56 * kMiB, 30 * kMiB};

std::vector<std::byte> pattern(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(count);
  for (auto& value : bytes) value = static_cast<std::byte>(generator() & 0xff);
  return bytes;
}

// Runs `work(step)` for steps 1..steps in a child process that reports each finished step
// through a pipe; kills it after a random delay. Returns the last step reported finished.
template <typename Work>
int run_and_kill(int steps, useconds_t delay, Work work) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return -1;
  pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    ::close(pipe_fds[0]);
    for (int step = 1; step <= steps; ++step) {
      if (!work(step)) ::_exit(10 + step);
      if (::write(pipe_fds[1], &step, sizeof step) != sizeof step) ::_exit(9);
    }
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  ::usleep(delay);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  int finished = 0, value = 0;
  while (::read(pipe_fds[0], &value, sizeof value) == static_cast<ssize_t>(sizeof value))
    finished = value;
  ::close(pipe_fds[0]);
  if (!WIFSIGNALED(status) && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) return -2;
  return finished;
}

// The disk after resize step `step` (0: the initial image): its size and content.
std::vector<std::byte> expected_after(int step, const std::vector<std::byte>& initial) {
  uint64_t size = kInitialSize, data = kInitialSize;
  for (int index = 0; index < step; ++index) {
    size = kSizes[index];
    data = std::min(data, size);
  }
  std::vector<std::byte> bytes(size);
  std::copy_n(initial.begin(), data, bytes.begin());
  return bytes;
}

// Microseconds `work` takes, so kills can land anywhere inside it.
template <typename Work>
useconds_t duration_of(Work work) {
  auto start = std::chrono::steady_clock::now();
  work();
  auto elapsed = std::chrono::steady_clock::now() - start;
  return static_cast<useconds_t>(
      std::max<int64_t>(1000, std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count()));
}

std::vector<std::byte> read_all(const std::filesystem::path& path) {
  auto device = open_image(path, true);  // read-write: a pending log is replayed
  if (!device) {
    ADD_FAILURE() << device.error().message();
    return {};
  }
  std::vector<std::byte> bytes((*device)->size());
  if (auto read = (*device)->read(0, bytes); !read) {
    ADD_FAILURE() << read.error().message();
    return {};
  }
  return bytes;
}

TEST(VhdxCrash, KilledResizeLeavesTheOldOrTheNewSize) {
  TempDir dir;
  std::mt19937 random(77);
  auto initial = pattern(kInitialSize, 5);
  auto make = [&](const std::filesystem::path& path, VhdxType type) {
    VhdxOptions options;
    options.type = type;
    options.block_size = kMiB;
    ASSERT_TRUE(create_vhdx(path, kInitialSize, options));
    auto device = open_vhdx(path, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write(0, initial));
  };
  const int steps = static_cast<int>(std::size(kSizes));
  auto all_steps = [&](const std::filesystem::path& path) {
    for (uint64_t size : kSizes) ASSERT_TRUE(resize_image(path, size, true, {}));
  };
  make(dir / "timing.vhdx", VhdxType::kFixed);
  useconds_t duration = duration_of([&] { all_steps(dir / "timing.vhdx"); });
  EXPECT_TRUE(read_all(dir / "timing.vhdx") == expected_after(steps, initial));
  for (int round = 1; round <= 6; ++round) {
    auto path = dir / ("disk" + std::to_string(round) + ".vhdx");
    make(path, round % 2 == 0 ? VhdxType::kFixed : VhdxType::kDynamic);
    auto delay = std::uniform_int_distribution<useconds_t>(0, duration)(random);
    int finished = run_and_kill(steps, delay, [&](int step) {
      return static_cast<bool>(resize_image(path, kSizes[step - 1], true, {}));
    });
    ASSERT_GE(finished, 0) << "the resizing process failed on its own";
    std::fprintf(stderr, "round %d: killed after %d of %d resizes\n", round, finished, steps);
    auto actual = read_all(path);
    bool as_finished = actual == expected_after(finished, initial);
    bool as_next = finished < steps && actual == expected_after(finished + 1, initial);
    EXPECT_TRUE(as_finished || as_next)
        << "round " << round << ": " << actual.size() << " bytes match neither step " << finished
        << " nor the next";
    auto report = check_image(*find_format("vhdx"), path, false);
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->clean()) << "round " << round;
    // The survivor resizes and writes again.
    ASSERT_TRUE(resize_image(path, 80 * kMiB, false, {}));
    auto device = open_vhdx(path, false);
    ASSERT_TRUE(device);
    EXPECT_TRUE((*device)->write(79 * kMiB, pattern(kMiB, 6)));
  }
}

TEST(VhdxCrash, KilledMergeLeavesTheChildReadingTheSameAndCanBeRepeated) {
  TempDir dir;
  std::mt19937 random(78);
  constexpr uint64_t kSize = 24 * kMiB;
  auto make = [&](int round) {
    auto parent = dir / ("parent" + std::to_string(round) + ".vhdx");
    auto child = dir / ("child" + std::to_string(round) + ".vhdx");
    VhdxOptions options;
    options.block_size = kMiB;
    EXPECT_TRUE(create_vhdx(parent, kSize, options));
    {
      auto device = open_vhdx(parent, false);
      EXPECT_TRUE(device && (*device)->write(0, pattern(kSize, 10 + round)));
    }
    EXPECT_TRUE(create_differencing(child, parent, false));
    auto device = open_vhdx(child, false);
    EXPECT_TRUE(device);
    // Every other MiB, partly: sector bitmaps and whole blocks.
    for (uint64_t mib = 0; device && mib < kSize / kMiB; mib += 2) {
      EXPECT_TRUE((*device)->write(mib * kMiB + 4096 * (mib % 3), pattern(kMiB - 8192, round)));
    }
    return std::pair{parent, child};
  };
  auto [timing_parent, timing_child] = make(0);
  useconds_t duration = duration_of([&] { EXPECT_TRUE(merge_image(timing_child, {})); });
  for (int round = 1; round <= 4; ++round) {
    auto [parent, child] = make(round);
    auto expected = read_all(child);
    auto delay = std::uniform_int_distribution<useconds_t>(0, duration)(random);
    int finished = run_and_kill(1, delay, [&](int) {
      return static_cast<bool>(merge_image(child, {}));
    });
    ASSERT_GE(finished, 0) << "the merging process failed on its own";
    std::fprintf(stderr, "round %d: merge %s\n", round, finished ? "finished" : "killed");
    EXPECT_TRUE(read_all(child) == expected) << "round " << round << ": the child changed";
    auto merged = merge_image(child, {});
    ASSERT_TRUE(merged) << merged.error().message();
    EXPECT_TRUE(read_all(parent) == expected) << "round " << round;
    EXPECT_TRUE(read_all(child) == expected) << "round " << round;
  }
}

}  // namespace
}  // namespace lamina::storage
