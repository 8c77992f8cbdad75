// Crash consistency: a writer process is killed with SIGKILL at random points; afterwards the
// image checks clean and every write acknowledged by flush() reads back.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "storage/image_operations.h"
#include "storage/vhd_check.h"
#include "storage/vhd_image.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kDiskSize = 32 * kMiB;
// 12 KiB slots straddle 512 KiB block boundaries now and then, so some writes allocate two
// blocks at once.
constexpr uint64_t kSlot = 12 * 1024;
constexpr uint32_t kSlots = static_cast<uint32_t>(kDiskSize / kSlot);
constexpr uint32_t kFlushEvery = 3;

std::vector<uint32_t> slot_order(uint32_t seed) {
  std::vector<uint32_t> order(kSlots);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  return order;
}

// The writer: never returns. Reports each flushed count through the pipe.
[[noreturn]] void writer(const std::string& path, uint32_t seed, int report) {
  auto image = VhdImage::open(path, {.writable = true, .durable = true, .open_parent = true, .access = {}});
  if (!image) ::_exit(10);
  auto order = slot_order(seed);
  for (uint32_t i = 0; i < kSlots; ++i) {
    if (!(*image)->write(uint64_t{order[i]} * kSlot, test::pattern(kSlot, seed * 100000 + i))) {
      ::_exit(11);
    }
    if ((i + 1) % kFlushEvery == 0) {
      if (!(*image)->flush()) ::_exit(12);
      uint32_t done = i + 1;
      if (::write(report, &done, sizeof done) != sizeof done) ::_exit(13);
    }
  }
  ::_exit(0);
}

class CrashTest : public ::testing::TestWithParam<bool> {};

TEST_P(CrashTest, KilledWriterLeavesACleanImageWithEveryFlushedWrite) {
  const bool differencing = GetParam();
  std::mt19937 random(1234 + differencing);
  test::TempDir dir;
  CreateOptions options;
  options.size = kDiskSize;
  options.block_size = 512 * 1024;
  if (differencing) {
    ASSERT_TRUE(create_image(dir.file("base.vhd"), "vhd", options, false));
    auto base = VhdImage::open(dir.file("base.vhd"), {.writable = true, .durable = true, .open_parent = true, .access = {}});
    ASSERT_TRUE((*base)->write(0, test::pattern(kDiskSize, 7)));
  }
  for (uint32_t round = 1; round <= 5; ++round) {
    std::string path = dir.file("disk" + std::to_string(round) + ".vhd");
    if (differencing) {
      ASSERT_TRUE(create_differencing(path, dir.file("base.vhd"), false));
    } else {
      ASSERT_TRUE(create_image(path, "vhd", options, false));
    }
    int pipe_fds[2];
    ASSERT_EQ(::pipe(pipe_fds), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(pipe_fds[0]);
      writer(path, round, pipe_fds[1]);
    }
    ::close(pipe_fds[1]);
    // Wait for the first report, then a random while, then kill mid-flight.
    uint32_t flushed = 0;
    ASSERT_EQ(::read(pipe_fds[0], &flushed, sizeof flushed), static_cast<ssize_t>(sizeof flushed));
    ::usleep(std::uniform_int_distribution<useconds_t>(1000, 40000)(random));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    uint32_t value;
    while (::read(pipe_fds[0], &value, sizeof value) == static_cast<ssize_t>(sizeof value)) {
      flushed = value;
    }
    ::close(pipe_fds[0]);
    ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0))
        << "writer failed with status " << status;

    std::fprintf(stderr, "round %u: killed after %u of %u writes were flushed\n", round, flushed, kSlots);
    auto report = check_vhd(path, false);
    ASSERT_TRUE(report) << report.error().message();
    for (const auto& problem : report->problems) {
      EXPECT_FALSE(problem.error) << "round " << round << ": " << problem.message;
    }
    std::string output;
    EXPECT_EQ(test::run(std::string(LAMINA_BINARY) + " disk check '" + path + "'", &output), 0)
        << "round " << round << ": " << output;
    auto image = VhdImage::open(path, {.writable = true, .durable = true, .open_parent = true, .access = {}});
    ASSERT_TRUE(image) << image.error().message();
    auto order = slot_order(round);
    for (uint32_t i = 0; i < flushed; ++i) {
      ASSERT_EQ(test::read_device(**image, uint64_t{order[i]} * kSlot, kSlot),
                test::pattern(kSlot, round * 100000 + i))
          << "round " << round << ": flushed write " << i << " of " << flushed << " is lost";
    }
    // The survivor stays writable.
    EXPECT_TRUE((*image)->write(0, test::pattern(4096, 1)));
    EXPECT_TRUE((*image)->flush());
  }
}

INSTANTIATE_TEST_SUITE_P(DynamicAndDifferencing, CrashTest, ::testing::Bool());

}  // namespace
}  // namespace lamina::storage
