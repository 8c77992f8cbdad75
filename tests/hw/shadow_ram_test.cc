// The i440FX's PAM registers over ShadowRam, driven through config space as SeaBIOS does
// (make_bios_writable / make_bios_readonly): which bytes reads see and where writes go.
// A vCPU write to a write-protected page reaches the device on the MMIO bus; the test makes
// the same choice a vCPU makes (GuestMemory::write_protected) before writing.
#include "hw/shadow_ram.h"

#include <gtest/gtest.h>

#include <array>

#include "hw/i440fx_host_bridge.h"

namespace lamina::hw {
namespace {

constexpr uint64_t kRamSize = 2 << 20;
constexpr uint64_t kRomSize = 256 << 10;

class ShadowRamTest : public ::testing::Test {
 protected:
  ShadowRamTest()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))),
        dma_(memory_),
        rom_(make_rom()),
        shadow_(dma_, rom_, [this] { ++flushes_; }),
        bridge_(shadow_) {}

  static std::vector<std::byte> make_rom() {
    std::vector<std::byte> rom(kRomSize);
    // Each byte says where it sits in the ROM's last 128 KiB (0xE0000-0xFFFFF when shown).
    for (size_t i = 0; i < rom.size(); ++i) rom[i] = std::byte{static_cast<uint8_t>(i >> 12)};
    return rom;
  }
  uint8_t rom_byte(uint64_t address) const {
    return static_cast<uint8_t>((address - 0xe0000 + (kRomSize - 0x20000)) >> 12);
  }
  uint8_t read(uint64_t address) {
    std::array<std::byte, 1> byte{};
    EXPECT_TRUE(memory_.read(address, byte));
    return static_cast<uint8_t>(byte[0]);
  }
  // A vCPU store: RAM unless the page is write-protected, then the MMIO bus's shadow device.
  void cpu_write(uint64_t address, uint8_t value) {
    const std::array<std::byte, 1> byte{std::byte{value}};
    if (memory_.write_protected(address & ~uint64_t{0xfff})) {
      shadow_.write(address - ShadowRam::kBase, byte);
    } else {
      ASSERT_TRUE(memory_.write(address, byte));
    }
  }
  void pam(unsigned reg, uint8_t value) {
    bridge_.config_write(static_cast<uint16_t>(I440fxHostBridge::kPam0 + reg), 1, value);
  }

  GuestMemory memory_;
  DmaMemory dma_;
  std::vector<std::byte> rom_;
  int flushes_ = 0;
  ShadowRam shadow_;
  I440fxHostBridge bridge_;
};

TEST_F(ShadowRamTest, IdentifiesAsI440fx) {
  EXPECT_EQ(bridge_.config_read(0, 4), 0x12378086u);
  EXPECT_EQ(bridge_.config_read(8, 1), 0x02u);
  EXPECT_EQ(bridge_.config_read(0x0b, 1), 0x06u);
}

TEST_F(ShadowRamTest, ResetShowsTheRomAndDropsWrites) {
  EXPECT_EQ(read(0xffff0), rom_byte(0xffff0));
  EXPECT_EQ(read(0xe0000), rom_byte(0xe0000));
  EXPECT_EQ(read(0xc0000), 0xff) << "no ROM decodes the option ROM area";
  cpu_write(0xf1234, 0x55);
  EXPECT_EQ(read(0xf1234), rom_byte(0xf1234));
  EXPECT_TRUE(memory_.write_protected(0xc0000));
  EXPECT_FALSE(memory_.write_protected(0x9f000));
  EXPECT_FALSE(memory_.write_protected(0x100000));
}

TEST_F(ShadowRamTest, SeabiosShadowsItselfAndWriteProtects) {
  // make_bios_writable: PAM1-6 0x33, PAM0 0x30; DRAM is zero, the code copies itself in.
  for (unsigned reg = 1; reg < 7; ++reg) pam(reg, 0x33);
  pam(0, 0x30);
  EXPECT_EQ(bridge_.config_read(I440fxHostBridge::kPam0, 1), 0x30u);
  EXPECT_EQ(read(0xf0000), 0);
  EXPECT_FALSE(memory_.write_protected(0xf0000));
  cpu_write(0xf0000, 0xaa);
  cpu_write(0xc8000, 0xbb);
  EXPECT_EQ(read(0xf0000), 0xaa);
  EXPECT_EQ(read(0xc8000), 0xbb);
  // make_bios_readonly: read DRAM, writes dropped.
  const int before = flushes_;
  pam(0, 0x10);
  pam(2, 0x11);
  EXPECT_GT(flushes_, before) << "cached write translations are flushed";
  EXPECT_TRUE(memory_.write_protected(0xf0000));
  cpu_write(0xf0000, 0x11);
  cpu_write(0xc8000, 0x22);
  EXPECT_EQ(read(0xf0000), 0xaa);
  EXPECT_EQ(read(0xc8000), 0xbb);
  // Other segments stay writable.
  cpu_write(0xd0000, 0x33);
  EXPECT_EQ(read(0xd0000), 0x33);
}

TEST_F(ShadowRamTest, WriteOnlySegmentsFillHiddenDram) {
  // PAM5 low field = 0xE0000: write-only (2): reads still see the ROM.
  pam(5, 0x02);
  cpu_write(0xe0010, 0x77);
  EXPECT_EQ(read(0xe0010), rom_byte(0xe0010));
  // Read enable: DRAM shows, with the byte written while it was hidden.
  pam(5, 0x03);
  EXPECT_EQ(read(0xe0010), 0x77);
  EXPECT_EQ(read(0xe0011), 0);
  // Back to the ROM side: DRAM hides its bytes and gets them back later.
  pam(5, 0x00);
  EXPECT_EQ(read(0xe0010), rom_byte(0xe0010));
  pam(5, 0x01);
  EXPECT_EQ(read(0xe0010), 0x77);
}

TEST_F(ShadowRamTest, ReservedBitsAndHostileWritesAreIgnored) {
  pam(0, 0xff);
  EXPECT_EQ(bridge_.config_read(I440fxHostBridge::kPam0, 1), 0x30u);
  // 16- and 32-bit config writes over several PAM registers at once.
  bridge_.config_write(0x5c, 4, 0x33333333);
  EXPECT_EQ(read(0xd0000), 0);
  cpu_write(0xd0000, 1);
  EXPECT_EQ(read(0xd0000), 1);
  // Offsets outside the area on the device: dropped.
  std::array<std::byte, 8> value{};
  shadow_.write(ShadowRam::kSize, value);
  shadow_.write(ShadowRam::kSize - 4, value);
  shadow_.read(ShadowRam::kSize, value);
  EXPECT_EQ(value[0], std::byte{0xff});
}

TEST_F(ShadowRamTest, StateRestoresAccessAndHiddenDram) {
  pam(5, 0x02);
  cpu_write(0xe0010, 0x77);
  StateWriter writer;
  shadow_.save(writer);
  GuestMemory memory = std::move(*GuestMemory::create({{0, kRamSize}}));
  DmaMemory dma(memory);
  ShadowRam other(dma, rom_, {});
  StateReader reader(writer.data());
  ASSERT_TRUE(other.load(reader));
  EXPECT_EQ(other.access(I440fxHostBridge::segment_of(5, false)), (ShadowRam::Access{false, true}));
  other.set_access(I440fxHostBridge::segment_of(5, false), ShadowRam::Access{true, true});
  std::array<std::byte, 1> byte{};
  ASSERT_TRUE(memory.read(0xe0010, byte));
  EXPECT_EQ(byte[0], std::byte{0x77});
}

}  // namespace
}  // namespace lamina::hw
