// VHD block allocation against power loss (issue 16, hole 6): a recording file layer
// (HostFileObserver) logs every write, zeroing, truncation and fdatasync an image makes; the
// test then rebuilds the file as a power cut at every point of that log could leave it (what
// was synced stays; of the writes since the last sync, every subset survives, in order) and
// checks each one opens read-write, passes `check`, and reads every sector as old or new data.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "storage/host_file.h"
#include "storage/image_operations.h"
#include "storage/vhd_check.h"
#include "storage/vhd_image.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kBlock = 64 * 1024;
constexpr uint64_t kDiskSize = 16 * kBlock;

struct Change {
  enum class Kind { kWrite, kZero, kTruncate, kFlush } kind;
  uint64_t offset = 0;  // kTruncate: the new size
  uint64_t length = 0;
  std::vector<std::byte> data;
};

class Recorder final : public HostFileObserver {
 public:
  void wrote(uint64_t offset, std::span<const std::byte> data) override {
    changes.push_back({Change::Kind::kWrite, offset, data.size(), {data.begin(), data.end()}});
  }
  void zeroed(uint64_t offset, uint64_t length) override {
    changes.push_back({Change::Kind::kZero, offset, length, {}});
  }
  void truncated(uint64_t size) override { changes.push_back({Change::Kind::kTruncate, size, 0, {}}); }
  void flushed() override { changes.push_back({Change::Kind::kFlush, 0, 0, {}}); }
  std::vector<Change> changes;
};

void apply(std::vector<std::byte>& file, const Change& change) {
  switch (change.kind) {
    case Change::Kind::kWrite:
      if (file.size() < change.offset + change.length) file.resize(change.offset + change.length);
      std::memcpy(file.data() + change.offset, change.data.data(), change.length);
      break;
    case Change::Kind::kZero:
      if (change.offset < file.size()) {
        uint64_t end = std::min<uint64_t>(file.size(), change.offset + change.length);
        std::fill(file.begin() + static_cast<ptrdiff_t>(change.offset),
                  file.begin() + static_cast<ptrdiff_t>(end), std::byte{0});
      }
      break;
    case Change::Kind::kTruncate: file.resize(change.offset); break;
    case Change::Kind::kFlush: break;
  }
}

// Every file a power cut during `changes` (applied to `before`) may leave.
std::vector<std::vector<std::byte>> crash_states(const std::vector<std::byte>& before,
                                                 const std::vector<Change>& changes) {
  std::vector<std::vector<std::byte>> states;
  std::vector<std::byte> durable = before;
  std::vector<const Change*> pending;
  auto add_states = [&] {
    // Every subset of the unsynced changes (in their order); prefixes only when there are many.
    size_t count = pending.size();
    if (count <= 10) {
      for (uint32_t mask = 0; mask < (1u << count); ++mask) {
        std::vector<std::byte> state = durable;
        for (size_t i = 0; i < count; ++i) {
          if (mask & (1u << i)) apply(state, *pending[i]);
        }
        states.push_back(std::move(state));
      }
    } else {
      for (size_t prefix = 0; prefix <= count; ++prefix) {
        std::vector<std::byte> state = durable;
        for (size_t i = 0; i < prefix; ++i) apply(state, *pending[i]);
        states.push_back(std::move(state));
      }
    }
  };
  for (const Change& change : changes) {
    add_states();  // the cut comes before this change
    if (change.kind == Change::Kind::kFlush) {
      for (const Change* done : pending) apply(durable, *done);
      pending.clear();
    } else {
      pending.push_back(&change);
    }
  }
  add_states();
  return states;
}

// The disk's content as a fresh reader sees it; nullopt when the image does not open.
std::optional<std::vector<std::byte>> disk_content(const std::string& path, std::string& why) {
  auto image = VhdImage::open(path, {.writable = true, .durable = true, .open_parent = true, .access = {}});
  if (!image) {
    why = image.error().message();
    return std::nullopt;
  }
  std::vector<std::byte> content((*image)->size());
  if (auto r = (*image)->read(0, content); !r) {
    why = r.error().message();
    return std::nullopt;
  }
  return content;
}

class VhdPowerLoss : public ::testing::TestWithParam<bool> {};

TEST_P(VhdPowerLoss, EveryCutLeavesAnImageThatOpensWithOldOrNewData) {
  const bool differencing = GetParam();
  test::TempDir dir;
  const std::string base = dir.file("base.vhd");
  CreateOptions options;
  options.size = kDiskSize;
  options.block_size = static_cast<uint32_t>(kBlock);
  ASSERT_TRUE(create_image(base, "vhd", options, false));
  std::string path = base;
  std::vector<std::byte> old_content(kDiskSize);
  {
    // Some data already there: block 1 of the base (the parent, for a differencing disk).
    auto image = VhdImage::open(base, {.writable = true, .durable = true, .open_parent = true, .access = {}});
    ASSERT_TRUE(image);
    auto existing = test::pattern(kBlock, 1);
    ASSERT_TRUE((*image)->write(kBlock, existing));
    ASSERT_TRUE((*image)->flush());
    std::copy(existing.begin(), existing.end(), old_content.begin() + kBlock);
  }
  if (differencing) {
    path = dir.file("child.vhd");
    ASSERT_TRUE(create_differencing(path, base, false));
  }
  const std::vector<std::byte> before = test::read_file(path);

  // The writes under test: new blocks (whole and partial), a write into an allocated block.
  struct Write {
    uint64_t offset;
    std::vector<std::byte> data;
  };
  std::vector<Write> writes = {{3 * kBlock + 4096, test::pattern(8192, 2)},
                               {kBlock + 512, test::pattern(1024, 3)},
                               {3 * kBlock + 32768, test::pattern(512, 4)},
                               {7 * kBlock, test::pattern(kBlock, 5)}};
  Recorder recorder;
  {
    auto image = VhdImage::open(path, {.writable = true, .durable = true, .open_parent = true, .access = {}});
    ASSERT_TRUE(image) << image.error().message();
    (*image)->file().set_observer(&recorder);
    for (const Write& write : writes) ASSERT_TRUE((*image)->write(write.offset, write.data));
    ASSERT_TRUE((*image)->flush());
    (*image)->file().set_observer(nullptr);
  }
  std::vector<std::byte> new_content = old_content;
  for (const Write& write : writes) {
    std::copy(write.data.begin(), write.data.end(),
              new_content.begin() + static_cast<ptrdiff_t>(write.offset));
  }

  auto states = crash_states(before, recorder.changes);
  ASSERT_GT(states.size(), recorder.changes.size());
  const std::string cut = dir.file("cut.vhd");
  size_t index = 0;
  for (const auto& state : states) {
    SCOPED_TRACE("power cut state " + std::to_string(index++) + " of " +
                 std::to_string(states.size()));
    // Beside the parent, so a differencing child finds it.
    test::write_file(cut, state);
    std::string why;
    auto content = disk_content(cut, why);
    ASSERT_TRUE(content) << "the image does not open read-write: " << why;
    for (uint64_t sector = 0; sector < kDiskSize / 512; ++sector) {
      auto at = [&](const std::vector<std::byte>& bytes) {
        return std::span(bytes).subspan(sector * 512, 512);
      };
      bool old_data = std::ranges::equal(at(*content), at(old_content));
      bool new_data = std::ranges::equal(at(*content), at(new_content));
      ASSERT_TRUE(old_data || new_data) << "sector " << sector << " is neither old nor new";
    }
    auto report = check_vhd(cut, false);
    ASSERT_TRUE(report) << report.error().message();
    EXPECT_TRUE(report->clean()) << report->problems.front().message;
  }
  // After the final flush, the new data is what a reader sees.
  test::write_file(cut, states.back());
  std::string why;
  EXPECT_EQ(disk_content(cut, why), new_content);
}

INSTANTIATE_TEST_SUITE_P(DynamicAndDifferencing, VhdPowerLoss, ::testing::Values(false, true),
                         [](const auto& test_case) {
                           return test_case.param ? "differencing" : "dynamic";
                         });

}  // namespace
}  // namespace lamina::storage
