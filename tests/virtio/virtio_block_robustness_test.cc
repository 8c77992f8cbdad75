// Random request chains, most nearly valid and then mutated, through the same harness the
// libFuzzer target uses: every chain must complete with a valid status or be reported as a
// device error, never crash, hang or break the device's promises.

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>

#include "base/guest_memory.h"
#include "virtio_block_fuzz_input.h"
#include "virtio_block_test_support.h"
#include "virtqueue_driver.h"

namespace lamina::virtio::test {
namespace {

std::filesystem::path fast_folder() {
  std::error_code ignored;
  return std::filesystem::is_directory("/dev/shm", ignored) ? std::filesystem::path("/dev/shm")
                                                            : std::filesystem::temp_directory_path();
}

class ChainGenerator {
 public:
  explicit ChainGenerator(uint64_t seed) : random_(seed) {}

  // One input: flags byte + RAM image with a few requests in queue 0, then some mutations.
  std::vector<uint8_t> next() {
    static_assert(kFuzzLayout.driver_area == 16 * kFuzzLayout.size);
    auto memory = GuestMemory::create({RamRegion{0, kFuzzRamSize}});
    testing::TestDriver driver(*memory, kFuzzLayout.size, kFuzzLayout.descriptor_table,
                               kFuzzDataStart);
    next_ = kFuzzDataStart;
    const uint8_t flags = static_cast<uint8_t>(pick(64));
    const uint64_t requests = 1 + pick(10);
    for (uint64_t i = 0; i < requests; ++i) add_request(*memory, driver);
    // Mutations: flip bytes in the rings and descriptors, sometimes in headers and data.
    const uint64_t flips = pick(4) == 0 ? pick(6) : 0;
    for (uint64_t i = 0; i < flips; ++i) {
      const uint64_t at = pick(3) == 0 ? pick(kFuzzRamSize) : pick(kFuzzDataStart);
      *memory->host_pointer(at, 1) ^= static_cast<std::byte>(1 + pick(255));
    }
    std::vector<uint8_t> input(1 + kFuzzRamSize);
    input[0] = flags;
    std::memcpy(input.data() + 1, memory->host_pointer(0, kFuzzRamSize), kFuzzRamSize);
    return input;
  }

 private:
  uint64_t pick(uint64_t bound) { return std::uniform_int_distribution<uint64_t>(0, bound - 1)(random_); }

  uint64_t allocate(uint64_t length) {
    if (next_ + length > kFuzzRamSize) next_ = kFuzzDataStart;
    const uint64_t address = next_;
    next_ += (length + 15) / 16 * 16;
    return address;
  }

  uint64_t sector() {
    const uint64_t capacity = kFuzzDiskSize / 512;
    switch (pick(8)) {
      case 0: return capacity - pick(4);
      case 1: return ~uint64_t{0} - pick(4);
      case 2: return (uint64_t{1} << 55) + pick(4);
      default: return pick(capacity);
    }
  }

  void add_request(GuestMemory& memory, testing::TestDriver& driver) {
    static constexpr uint32_t kTypes[] = {0, 1, 4, 8, 11, 13, 0, 1, 2, 10, 14};
    const uint32_t type = kTypes[pick(std::size(kTypes))];
    std::vector<testing::TestBuffer> parts;
    std::array<std::byte, 16> header{};
    store_le<uint32_t>(header.data(), type);
    store_le<uint64_t>(header.data() + 8, sector());
    const uint64_t header_address = allocate(16);
    (void)memory.write(header_address, header);
    parts.push_back({header_address, static_cast<uint32_t>(pick(8) == 0 ? pick(17) : 16), false});

    const bool writes_data = type == 0 || type == 8;
    uint64_t length = 0;
    if (type == 0 || type == 1) {
      length = pick(6) == 0 ? pick(3000) : 512 * (1 + pick(8));
    } else if (type == 8) {
      length = pick(4) == 0 ? pick(40) : 20;
    } else if (type == 11 || type == 13) {
      length = 16 * pick(pick(8) == 0 ? 40 : 3);
      const uint64_t segments = allocate(length);
      for (uint64_t offset = 0; offset + 16 <= length; offset += 16) {
        std::array<std::byte, 16> segment{};
        store_le<uint64_t>(segment.data(), sector());
        store_le<uint32_t>(segment.data() + 8, static_cast<uint32_t>(pick(8) == 0 ? pick(~0u) : pick(64)));
        store_le<uint32_t>(segment.data() + 12, static_cast<uint32_t>(pick(6) == 0 ? pick(4) : 0));
        (void)memory.write(segments + offset, segment);
      }
      parts.push_back({segments, static_cast<uint32_t>(length), false});
      length = 0;
    }
    // Data split into 1-3 buffers, in the direction the type wants (or, rarely, the other).
    const bool wrong_direction = pick(10) == 0;
    for (uint64_t left = length; left > 0;) {
      const uint64_t piece = pick(3) == 0 ? std::min(left, 1 + pick(left)) : left;
      if (type == 1) {
        const auto bytes = pattern_bytes(piece, pick(1000));
        const uint64_t address = allocate(piece);
        (void)memory.write(address, bytes);
        parts.push_back({address, static_cast<uint32_t>(piece), wrong_direction});
      } else {
        parts.push_back({allocate(piece), static_cast<uint32_t>(piece), !wrong_direction || !writes_data});
      }
      left -= piece;
    }
    // The status byte, missing now and then.
    if (pick(20) != 0) parts.push_back({allocate(1), 1, true});
    // Readable parts must come first for a valid chain; the queue itself refuses the rest.
    driver.add_chain(parts);
  }

  std::mt19937_64 random_;
  uint64_t next_ = kFuzzDataStart;
};

TEST(VirtioBlockRobustnessTest, RandomChainsNeverBreakTheDevice) {
  TempFolder folder(fast_folder());
  BlockFuzzHarness harness(folder.file(""));
  ASSERT_TRUE(harness.ready());
  ChainGenerator generator(20261124);
  uint64_t completed = 0;
  uint64_t errors = 0;
  // LAMINA_VIRTIO_BLOCK_CORPUS=DIR saves the first inputs there as seeds for the fuzzer.
  const char* corpus = std::getenv("LAMINA_VIRTIO_BLOCK_CORPUS");
  for (int i = 0; i < 1500; ++i) {
    const auto input = generator.next();
    if (corpus != nullptr && i < 64) {
      std::ofstream(std::string(corpus) + "/seed-" + std::to_string(i), std::ios::binary)
          .write(reinterpret_cast<const char*>(input.data()), static_cast<std::streamsize>(input.size()));
    }
    const FuzzOutcome outcome = harness.run(input);
    ASSERT_TRUE(outcome.violation.empty()) << "input " << i << ": " << outcome.violation;
    completed += outcome.completed;
    errors += outcome.device_error ? 1 : 0;
  }
  // Both paths are exercised: many requests complete, some chains need a reset.
  EXPECT_GT(completed, 3000u);
  EXPECT_GT(errors, 20u);
}

TEST(VirtioBlockRobustnessTest, ArbitraryBytesNeverBreakTheDevice) {
  TempFolder folder(fast_folder());
  BlockFuzzHarness harness(folder.file(""));
  ASSERT_TRUE(harness.ready());
  std::mt19937_64 random(7);
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> input(1 + (random() % (kFuzzRamSize + 64)));
    for (auto& byte : input) byte = static_cast<uint8_t>(random());
    // Keep the available index small now and then, so some chains are walked.
    if (input.size() > kFuzzLayout.driver_area + 4 && (i % 2) == 0) {
      input[1 + kFuzzLayout.driver_area + 2] = static_cast<uint8_t>(random() % 4);
      input[1 + kFuzzLayout.driver_area + 3] = 0;
    }
    const FuzzOutcome outcome = harness.run(input);
    ASSERT_TRUE(outcome.violation.empty()) << "input " << i << ": " << outcome.violation;
  }
}

}  // namespace
}  // namespace lamina::virtio::test
