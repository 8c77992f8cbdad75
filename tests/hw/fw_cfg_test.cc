// fw_cfg through its ports, as SeaBIOS and OVMF drive it (QEMU docs/specs/fw_cfg.rst):
// selector and data reads, the file directory, DMA read/skip/select, refused writes, and
// descriptors a hostile guest makes up.
#include "hw/fw_cfg.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <random>
#include <string>

#include "base/byte_order.h"

namespace lamina::hw {
namespace {

constexpr uint64_t kRamSize = 1 << 20;
constexpr uint64_t kDescriptor = 0x1000;
constexpr uint64_t kBuffer = 0x2000;

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

class FwCfgTest : public ::testing::Test {
 protected:
  FwCfgTest()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))),
        dma_(memory_, [this](uint64_t, uint64_t length) { reported_ += length; }),
        fw_cfg_(dma_) {}

  void select(uint16_t key) {
    std::array<std::byte, 2> value{};
    store_le<uint16_t>(value.data(), key);
    fw_cfg_.write(0, value);
  }
  std::string read_data(size_t count) {
    std::string out;
    for (size_t i = 0; i < count; ++i) {
      std::array<std::byte, 1> byte{};
      fw_cfg_.read(1, byte);
      out.push_back(static_cast<char>(byte[0]));
    }
    return out;
  }
  // Writes a descriptor at `at` and starts it the way SeaBIOS does (the low half only).
  uint32_t dma(uint32_t control, uint32_t length, uint64_t address, uint64_t at = kDescriptor) {
    std::array<std::byte, 16> descriptor{};
    store_be<uint32_t>(descriptor.data(), control);
    store_be<uint32_t>(descriptor.data() + 4, length);
    store_be<uint64_t>(descriptor.data() + 8, address);
    if (memory_.contains(at, 16)) {
      EXPECT_TRUE(memory_.write(at, descriptor));
    }
    start(at);
    std::array<std::byte, 4> answer{};
    if (memory_.contains(at, 4)) {
      EXPECT_TRUE(memory_.read(at, answer));
    }
    return load_be<uint32_t>(answer.data());
  }
  void start(uint64_t at) {
    std::array<std::byte, 4> high{};
    std::array<std::byte, 4> low{};
    store_be<uint32_t>(high.data(), static_cast<uint32_t>(at >> 32));
    store_be<uint32_t>(low.data(), static_cast<uint32_t>(at));
    fw_cfg_.write(4, high);
    fw_cfg_.write(8, low);
  }
  std::string ram(uint64_t address, size_t length) {
    std::string out(length, '\0');
    EXPECT_TRUE(memory_.read(address, std::as_writable_bytes(std::span(out))));
    return out;
  }

  GuestMemory memory_;
  DmaMemory dma_;
  uint64_t reported_ = 0;
  FwCfg fw_cfg_;
};

TEST_F(FwCfgTest, SignatureIdAndItemsThroughTheDataPort) {
  select(fw_cfg::kSignature);
  EXPECT_EQ(read_data(4), "QEMU");
  select(fw_cfg::kId);
  const std::string id = read_data(4);
  EXPECT_EQ(load_le<uint32_t>(id.data()), fw_cfg::kFeatureTraditional | fw_cfg::kFeatureDma);
  ASSERT_TRUE(fw_cfg_.add_item(fw_cfg::kCpuCount, {std::byte{3}, std::byte{0}}));
  select(fw_cfg::kCpuCount);
  EXPECT_EQ(read_data(3), std::string("\x03\x00\x00", 3)) << "past the end reads zeros";
  // Selecting again starts over; an absent key reads zeros.
  select(fw_cfg::kCpuCount);
  EXPECT_EQ(read_data(1), "\x03");
  select(0x1234);
  EXPECT_EQ(read_data(2), std::string(2, '\0'));
}

TEST_F(FwCfgTest, DmaRegisterReadsTheSignature) {
  std::array<std::byte, 8> value{};
  fw_cfg_.read(4, value);
  EXPECT_EQ(load_be<uint64_t>(value.data()), fw_cfg::kDmaSignature);
}

TEST_F(FwCfgTest, FileDirectoryListsFilesInKeyOrder) {
  auto first = fw_cfg_.add_file("etc/e820", bytes_of("0123456789"));
  auto second = fw_cfg_.add_file("bootorder", bytes_of("x"));
  ASSERT_TRUE(first && second);
  EXPECT_EQ(*first, fw_cfg::kFirstFileKey);
  EXPECT_EQ(*second, fw_cfg::kFirstFileKey + 1);
  select(fw_cfg::kFileDirectory);
  const std::string directory = read_data(4 + 2 * 64);
  EXPECT_EQ(load_be<uint32_t>(directory.data()), 2u);
  const char* entry = directory.data() + 4;
  EXPECT_EQ(load_be<uint32_t>(entry), 10u);
  EXPECT_EQ(load_be<uint16_t>(entry + 4), fw_cfg::kFirstFileKey);
  EXPECT_STREQ(entry + 8, "etc/e820");
  EXPECT_STREQ(entry + 64 + 8, "bootorder");
  // The file's contents under its key.
  select(*first);
  EXPECT_EQ(read_data(10), "0123456789");
}

TEST_F(FwCfgTest, RefusesBadFilesAndDeviceKeys) {
  EXPECT_FALSE(fw_cfg_.add_file("", {}));
  EXPECT_FALSE(fw_cfg_.add_file(std::string(56, 'a'), {}));
  ASSERT_TRUE(fw_cfg_.add_file("a", {}));
  EXPECT_FALSE(fw_cfg_.add_file("a", {}));
  EXPECT_FALSE(fw_cfg_.add_item(fw_cfg::kFileDirectory, {}));
  EXPECT_FALSE(fw_cfg_.add_item(fw_cfg::kSignature, {}));
  EXPECT_FALSE(fw_cfg_.add_item(fw_cfg::kFirstFileKey, {}));
}

TEST_F(FwCfgTest, DmaSelectReadAndSkip) {
  auto key = fw_cfg_.add_file("etc/table-loader", bytes_of("abcdefghij"));
  ASSERT_TRUE(key);
  const uint32_t select_read = (uint32_t{*key} << 16) | fw_cfg::kDmaSelect | fw_cfg::kDmaRead;
  EXPECT_EQ(dma(select_read, 4, kBuffer), 0u);
  EXPECT_EQ(ram(kBuffer, 4), "abcd");
  EXPECT_EQ(dma(fw_cfg::kDmaSkip, 2, 0), 0u);
  // Reads continue at the offset and fill zeros past the end.
  EXPECT_EQ(dma(fw_cfg::kDmaRead, 6, kBuffer), 0u);
  EXPECT_EQ(ram(kBuffer, 6), std::string("ghij\0\0", 6));
  EXPECT_EQ(reported_, 10u + 3 * 4) << "data and answers are reported to the vCPUs";
  // The data port follows the same offset (at the end now).
  EXPECT_EQ(read_data(1), std::string(1, '\0'));
  // A 64-bit write of the address starts a transfer too.
  std::array<std::byte, 16> descriptor{};
  store_be<uint32_t>(descriptor.data(), select_read);
  store_be<uint32_t>(descriptor.data() + 4, 3);
  store_be<uint64_t>(descriptor.data() + 8, kBuffer + 0x100);
  ASSERT_TRUE(memory_.write(kDescriptor, descriptor));
  std::array<std::byte, 8> address{};
  store_be<uint64_t>(address.data(), kDescriptor);
  fw_cfg_.write(4, address);
  EXPECT_EQ(ram(kBuffer + 0x100, 3), "abc");
}

TEST_F(FwCfgTest, DmaWriteIsRefused) {
  auto key = fw_cfg_.add_file("etc/boot-fail-wait", bytes_of("1234"));
  ASSERT_TRUE(key);
  ASSERT_TRUE(memory_.write(kBuffer, bytes_of("XXXX")));
  const uint32_t control = (uint32_t{*key} << 16) | fw_cfg::kDmaSelect | fw_cfg::kDmaWrite;
  EXPECT_EQ(dma(control, 4, kBuffer), fw_cfg::kDmaError);
  EXPECT_EQ(fw_cfg_.item(*key), bytes_of("1234"));
}

TEST_F(FwCfgTest, HostileDescriptors) {
  auto key = fw_cfg_.add_file("etc/e820", bytes_of("abcdefgh"));
  ASSERT_TRUE(key);
  const uint32_t select_read = (uint32_t{*key} << 16) | fw_cfg::kDmaSelect | fw_cfg::kDmaRead;
  // A destination outside RAM, or running past its end: an error, nothing written.
  EXPECT_EQ(dma(select_read, 8, kRamSize + 0x1000), fw_cfg::kDmaError);
  EXPECT_EQ(dma(select_read, 8, kRamSize - 4), fw_cfg::kDmaError);
  EXPECT_EQ(dma(select_read, 16, ~uint64_t{0} - 7), fw_cfg::kDmaError);
  // A huge length: refused before any work.
  EXPECT_EQ(dma(select_read, 0xffffffff, 0), fw_cfg::kDmaError);
  EXPECT_EQ(dma(select_read, FwCfg::kMaxDmaLength + 1, 0), fw_cfg::kDmaError);
  // A skip past the end stops at the end.
  EXPECT_EQ(dma(fw_cfg::kDmaSkip, 0xffffffff, 0), 0u);
  EXPECT_EQ(dma(fw_cfg::kDmaRead, 2, kBuffer), 0u);
  EXPECT_EQ(ram(kBuffer, 2), std::string(2, '\0'));
  // A descriptor outside RAM is ignored (there is nowhere to answer).
  dma(select_read, 8, kBuffer, kRamSize + 0x10000);
  dma(select_read, 8, kBuffer, kRamSize - 8);
  // A transfer into its own descriptor (the loop a guest could try): the bytes land, then
  // the answer; the descriptor is read once, so nothing repeats.
  EXPECT_EQ(dma(select_read, 8, kDescriptor), 0u);
  EXPECT_EQ(ram(kDescriptor + 4, 4), "efgh");
  // Zero length, no operation bits, unknown bits: no-ops that succeed.
  EXPECT_EQ(dma(0, 0, 0), 0u);
  EXPECT_EQ(dma(0xffe0, 100, 0), 0u);
  // Partial writes of the address register start nothing.
  std::array<std::byte, 2> half{};
  fw_cfg_.write(8, half);
  fw_cfg_.write(6, half);
}

// Hostile guest: random accesses of every size at every offset, with RAM full of random bytes
// so every DMA descriptor is made up, must be survived, and the device must work afterwards.
TEST_F(FwCfgTest, RandomAccessesAreSurvived) {
  ASSERT_TRUE(fw_cfg_.add_file("etc/e820", std::vector<std::byte>(100, std::byte{7})));
  std::mt19937_64 random(20261206);
  std::vector<std::byte> noise(kRamSize);
  for (std::byte& byte : noise) byte = static_cast<std::byte>(random());
  ASSERT_TRUE(memory_.write(0, noise));
  const size_t sizes[] = {1, 2, 4, 8};
  for (int step = 0; step < 100'000; ++step) {
    const size_t size = sizes[random() % 4];
    const uint64_t offset = random() % (FwCfg::kPortSize + 4);
    std::array<std::byte, 8> data{};
    uint64_t value = random();
    // Start transfers at descriptors inside RAM most of the time.
    if (offset >= 4 && offset < FwCfg::kPortSize && random() % 4 != 0) value %= kRamSize;
    for (size_t i = 0; i < 8; ++i) data[i] = static_cast<std::byte>(value >> (56 - 8 * i));
    if (random() % 3 == 0) {
      fw_cfg_.read(offset, std::span(data.data(), size));
    } else {
      fw_cfg_.write(offset, std::span<const std::byte>(data.data() + 8 - size, size));
    }
  }
  select(fw_cfg::kSignature);
  EXPECT_EQ(read_data(4), "QEMU");
}

TEST_F(FwCfgTest, StateKeepsTheSelectorAndOffset) {
  auto key = fw_cfg_.add_file("f", bytes_of("abc"));
  ASSERT_TRUE(key);
  select(*key);
  EXPECT_EQ(read_data(1), "a");
  StateWriter writer;
  fw_cfg_.save(writer);
  FwCfg other(dma_);
  ASSERT_TRUE(other.add_file("f", bytes_of("abc")));
  StateReader reader(writer.data());
  ASSERT_TRUE(other.load(reader));
  std::array<std::byte, 1> byte{};
  other.read(1, byte);
  EXPECT_EQ(static_cast<char>(byte[0]), 'b');
}

}  // namespace
}  // namespace lamina::hw
