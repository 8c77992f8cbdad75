#include "hw/acpi_pm.h"

#include <gtest/gtest.h>

#include "fakes.h"
#include "hw/reset_control.h"

namespace lamina::hw {
namespace {

using testing::read32;
using testing::read_register;
using testing::RecordingIrqLine;
using testing::write_register;

constexpr uint8_t kS5 = 5;

class AcpiPmTest : public ::testing::Test {
 protected:
  uint16_t status() { return static_cast<uint16_t>(read_register(pm.event_block(), 0, 2)); }

  ManualClock clock{0};
  RecordingIrqLine sci;
  int poweroffs = 0;
  AcpiPm pm{clock, sci, [this] { ++poweroffs; }, false, kS5};
};

TEST_F(AcpiPmTest, TimerCountsAt3579545HzAndWrapsAt24Bits) {
  EXPECT_EQ(read32(pm.timer_block(), 0), 0u);
  clock.set(1'000'000'000);
  EXPECT_EQ(read32(pm.timer_block(), 0), 3'579'545u & 0xffffff);
  clock.set(ticks_to_ns(0x1000005, AcpiPm::kTimerFrequencyHz));
  EXPECT_EQ(read32(pm.timer_block(), 0), 5u);
  AcpiPm wide(clock, sci, nullptr, true, kS5);
  EXPECT_EQ(read32(wide.timer_block(), 0), 0x1000005u);
}

TEST_F(AcpiPmTest, TimerStatusFollowsTheTopBit) {
  EXPECT_EQ(status() & AcpiPm::kTimerStatus, 0);
  clock.set(ticks_to_ns(0x800000, AcpiPm::kTimerFrequencyHz));
  EXPECT_EQ(status() & AcpiPm::kTimerStatus, AcpiPm::kTimerStatus);
  write_register(pm.event_block(), 0, 2, AcpiPm::kTimerStatus);
  EXPECT_EQ(status() & AcpiPm::kTimerStatus, 0);
}

TEST_F(AcpiPmTest, SlpTypS5WithSlpEnPowersOff) {
  write_register(pm.control_block(), 0, 2, (kS5 << 10) | 1);
  EXPECT_EQ(poweroffs, 0) << "SLP_TYP alone does nothing";
  write_register(pm.control_block(), 0, 2, (kS5 << 10) | (1 << 13) | 1);
  EXPECT_EQ(poweroffs, 1);
  EXPECT_EQ(read_register(pm.control_block(), 0, 2) & (1 << 13), 0u) << "SLP_EN is write-only";
}

TEST_F(AcpiPmTest, OtherSleepStatesWakeAtOnce) {
  write_register(pm.control_block(), 0, 2, (3 << 10) | (1 << 13) | 1);
  EXPECT_EQ(poweroffs, 0);
  EXPECT_EQ(status() & AcpiPm::kWakeStatus, AcpiPm::kWakeStatus);
}

TEST_F(AcpiPmTest, PowerButtonRaisesSciWhenEnabled) {
  EXPECT_EQ(read_register(pm.control_block(), 0, 2) & 1, 1u) << "SCI_EN fixed on";
  pm.press_power_button();
  EXPECT_FALSE(sci.level()) << "PWRBTN_EN is clear";
  EXPECT_EQ(status() & AcpiPm::kPowerButtonStatus, AcpiPm::kPowerButtonStatus);
  write_register(pm.event_block(), 2, 2, 1 << 8);  // PM1_EN.PWRBTN_EN
  EXPECT_TRUE(sci.level());
  write_register(pm.event_block(), 0, 2, AcpiPm::kPowerButtonStatus);
  EXPECT_FALSE(sci.level());
  write_register(pm.event_block(), 0, 4, 0xffffffff);  // a dword write reaches both registers
  EXPECT_EQ(read_register(pm.event_block(), 2, 2), 0x0721u);
}

TEST_F(AcpiPmTest, SaveAndLoadContinuesTheTimer) {
  clock.set(500'000'000);
  write_register(pm.event_block(), 2, 2, 1 << 8);
  pm.press_power_button();
  const uint32_t before = read32(pm.timer_block(), 0);
  StateWriter writer;
  pm.save(writer);
  ManualClock other_clock(77'000'000'000);
  RecordingIrqLine other_sci;
  AcpiPm copy(other_clock, other_sci, nullptr, false, kS5);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(read32(copy.timer_block(), 0), before);
  EXPECT_TRUE(other_sci.level());
}

TEST(ResetControl, ResetsOnRstCpuRisingEdge) {
  int resets = 0;
  ResetControl port([&] { ++resets; });
  testing::out8(port, 0, 0x02);
  EXPECT_EQ(resets, 0);
  testing::out8(port, 0, 0x06);
  EXPECT_EQ(resets, 1);
  EXPECT_EQ(testing::in8(port, 0), 0x02) << "RST_CPU does not stick";
  testing::out8(port, 0, 0x0e);
  EXPECT_EQ(resets, 2);
}

TEST(ResetControl, SaveAndLoadKeepsTheLatchedBits) {
  ResetControl port(nullptr);
  testing::out8(port, 0, 0x0a);
  StateWriter writer;
  port.save(writer);
  int resets = 0;
  ResetControl copy([&] { ++resets; });
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(testing::in8(copy, 0), 0x0a);
  EXPECT_EQ(resets, 0) << "restoring never resets";
}

}  // namespace
}  // namespace lamina::hw

namespace lamina::hw {
namespace {

using testing::read_register;
using testing::RecordingIrqLine;
using testing::write_register;

// GPE0 (ACPI 6.5 section 4.8.4.1): a raised GPE is a status bit; the SCI follows status &
// enable; status bits are write-1-to-clear.
TEST(AcpiPmGpe, RaisedGpeDrivesTheSciWhileEnabledAndUncleared) {
  ManualClock clock{0};
  RecordingIrqLine sci;
  AcpiPm pm{clock, sci, nullptr, true, 5};
  pm.raise_gpe(1);
  EXPECT_EQ(read_register(pm.gpe0_block(), 0, 2), 0x2u);
  EXPECT_FALSE(sci.level()) << "not enabled yet";
  write_register(pm.gpe0_block(), 2, 2, 0x2);
  EXPECT_TRUE(sci.level());
  EXPECT_EQ(read_register(pm.gpe0_block(), 2, 2), 0x2u);
  write_register(pm.gpe0_block(), 0, 2, 0x1);
  EXPECT_TRUE(sci.level()) << "clearing another bit leaves it";
  write_register(pm.gpe0_block(), 0, 2, 0x2);
  EXPECT_FALSE(sci.level());
  pm.raise_gpe(99);  // out of range: ignored
  EXPECT_EQ(read_register(pm.gpe0_block(), 0, 2), 0u);
}

}  // namespace
}  // namespace lamina::hw
