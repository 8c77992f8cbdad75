// Images opened through GrantedFiles (base/granted_files.h): laminad records a differencing
// chain, a worker replays it from the descriptors alone. The replay must read the same data
// with no file system at all (the folder is moved away first), keep the locks laminad took,
// and refuse anything not granted.

#include <gtest/gtest.h>

#include <fcntl.h>

#include <filesystem>

#include "storage/image_format.h"
#include "storage/image_operations.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// The wire trip of a start request: the grants' JSON and duplicates of their descriptors.
GrantedFiles replay_of(const GrantedFiles& recorded) {
  std::vector<UniqueFd> fds;
  for (int fd : recorded.descriptors()) fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  auto replaying = GrantedFiles::from_wire(recorded.to_json(), std::move(fds));
  EXPECT_TRUE(replaying) << replaying.error().message();
  return std::move(*replaying);
}

struct Chain {
  test::TempDir dir;
  std::string base, child;
  std::vector<std::byte> written = test::pattern(4096, 9);
  Chain() : base(dir.file("base.vhd")), child(dir.file("child.vhd")) {
    CreateOptions options;
    options.size = 8 * kMiB;
    EXPECT_TRUE(create_image(base, "vhd", options, false));
    EXPECT_TRUE(create_differencing(child, base, false));
    auto image = open_image(child, true);
    EXPECT_TRUE(image);
    EXPECT_TRUE((*image)->write(3 * kMiB, written));
  }
  ImageAccess access(GrantedFiles& granted) const {
    ImageAccess result;
    result.references.granted = &granted;
    return result;
  }
};

TEST(GrantedImages, ReplayOpensTheChainWithoutTheFileSystem) {
  Chain chain;
  GrantedFiles recording = GrantedFiles::recording();
  {
    auto recorded = open_image(chain.child, true, chain.access(recording));
    ASSERT_TRUE(recorded) << recorded.error().message();
  }
  // The child (read-write) and its parent (read-only), each once, and where each of the
  // child's parent locators led.
  const nlohmann::json wire = recording.to_json();
  ASSERT_EQ(wire["files"].size(), 2u) << wire.dump();
  EXPECT_EQ(wire["files"][0]["path"], chain.child);
  EXPECT_EQ(wire["files"][0]["access"], "read_write");
  EXPECT_EQ(wire["files"][1]["access"], "read");
  ASSERT_FALSE(wire["answers"].empty()) << wire.dump();
  for (const auto& [key, answer] : wire["answers"].items()) EXPECT_EQ(answer, chain.base) << key;

  // The worker's view: its paths lead nowhere, only the descriptors do.
  const std::string moved = chain.dir.path() + "-moved";
  std::filesystem::rename(chain.dir.path(), moved);
  GrantedFiles replaying = replay_of(recording);
  auto replayed = open_image(chain.child, true, chain.access(replaying));
  std::filesystem::rename(moved, chain.dir.path());
  ASSERT_TRUE(replayed) << replayed.error().message();
  std::vector<std::byte> read(chain.written.size());
  ASSERT_TRUE((*replayed)->read(3 * kMiB, read));
  EXPECT_EQ(read, chain.written);
  // Writes reach the real file through the granted descriptor.
  auto update = test::pattern(4096, 4);
  ASSERT_TRUE((*replayed)->write(5 * kMiB, update));
  ASSERT_TRUE((*replayed)->flush());
  replayed->reset();
  recording = GrantedFiles::recording();
  replaying = GrantedFiles::recording();
  auto reopened = open_image(chain.child, false);
  ASSERT_TRUE(reopened) << reopened.error().message();
  ASSERT_TRUE((*reopened)->read(5 * kMiB, read));
  EXPECT_EQ(read, update);
}

TEST(GrantedImages, TheRecordedLocksTravelWithTheDescriptors) {
  Chain chain;
  GrantedFiles recording = GrantedFiles::recording();
  ASSERT_TRUE(open_image(chain.child, true, chain.access(recording)));
  // laminad's image objects are gone; its grants still hold the writer's lock ...
  auto other = open_image(chain.child, true);
  ASSERT_FALSE(other);
  EXPECT_NE(other.error().message().find("in use by another process"), std::string::npos);
  // ... and so does the worker's copy after laminad's closes.
  GrantedFiles replaying = replay_of(recording);
  auto replayed = open_image(chain.child, true, chain.access(replaying));
  ASSERT_TRUE(replayed);
  recording = GrantedFiles::recording();
  replaying = GrantedFiles::recording();
  EXPECT_FALSE(open_image(chain.child, true));
  // The parent is shared: readers may open it, writers may not.
  EXPECT_TRUE(open_image(chain.base, false));
  EXPECT_FALSE(open_image(chain.base, true));
  replayed->reset();
  EXPECT_TRUE(open_image(chain.child, true));
}

TEST(GrantedImages, ReplayRefusesWhatWasNotGranted) {
  Chain chain;
  GrantedFiles recording = GrantedFiles::recording();
  ASSERT_TRUE(open_image(chain.base, false, chain.access(recording)));
  GrantedFiles replaying = replay_of(recording);
  // The child was never opened by laminad: the worker cannot reach it, though it exists.
  auto refused = open_image(chain.child, false, chain.access(replaying));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("not granted"), std::string::npos)
      << refused.error().message();
  // Granted for reading is not granted for writing.
  auto upgraded = open_image(chain.base, true, chain.access(replaying));
  ASSERT_FALSE(upgraded);
  EXPECT_NE(upgraded.error().message().find("not granted"), std::string::npos);
}

TEST(GrantedImages, AProbeDoesNotBlockTheWritableOpen) {
  // detect_format opens read-only first; the writable open after it must not trip over the
  // shared lock the probe's grant holds.
  Chain chain;
  GrantedFiles recording = GrantedFiles::recording();
  ASSERT_TRUE(detect_format(chain.child, chain.access(recording)));
  auto writable = open_image(chain.child, true, chain.access(recording));
  ASSERT_TRUE(writable) << writable.error().message();
  const nlohmann::json wire = recording.to_json();
  ASSERT_EQ(wire["files"].size(), 2u) << wire.dump();
  EXPECT_EQ(wire["files"][0]["access"], "read_write") << wire.dump();
}

TEST(GrantedFilesWire, BadShapesAreRefused) {
  EXPECT_FALSE(GrantedFiles::from_wire(nlohmann::json::array(), {}));
  EXPECT_FALSE(GrantedFiles::from_wire({{"files", {{{"path", "/x"}, {"access", "read"}}}}}, {}));
  std::vector<UniqueFd> one;
  one.emplace_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(GrantedFiles::from_wire({{"files", {{{"path", "/x"}, {"access", "exec"}}}}},
                                       std::move(one)));
  EXPECT_FALSE(GrantedFiles::from_wire({{"files", nlohmann::json::array()}, {"answers", {{"k", 1}}}},
                                       {}));
  EXPECT_TRUE(GrantedFiles::from_wire({{"files", nlohmann::json::array()}}, {}));
}

}  // namespace
}  // namespace lamina::storage
