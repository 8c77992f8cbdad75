#include "hw/rtc.h"

#include <gtest/gtest.h>

#include "fakes.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::RecordingIrqLine;

// Epoch values from Python's calendar.timegm, an independent oracle for the date arithmetic.
constexpr int64_t k20240229_134530 = 1709214330;  // a Thursday in a leap year
constexpr int64_t k20991231_235959 = 4102444799;
constexpr int64_t k19991231_115900 = 946641540;

class RtcTest : public ::testing::Test {
 protected:
  uint8_t cmos(uint8_t index) {
    out8(rtc, 0, index);
    return in8(rtc, 1);
  }
  void set_cmos(uint8_t index, uint8_t value) {
    out8(rtc, 0, index);
    out8(rtc, 1, value);
  }
  void advance(uint64_t ns) {
    clock.advance(ns);
    queue.run_expired();
  }

  ManualClock clock{5'000'000'000};
  TimerQueue queue{clock};
  RecordingIrqLine irq8;
  Rtc rtc{queue, irq8, k20240229_134530};
};

TEST_F(RtcTest, ReadsTheHostTimeInBcd24Hour) {
  EXPECT_EQ(cmos(0x00), 0x30);
  EXPECT_EQ(cmos(0x02), 0x45);
  EXPECT_EQ(cmos(0x04), 0x13);
  EXPECT_EQ(cmos(0x06), 0x05) << "Thursday; Sunday is 1";
  EXPECT_EQ(cmos(0x07), 0x29);
  EXPECT_EQ(cmos(0x08), 0x02);
  EXPECT_EQ(cmos(0x09), 0x24);
  EXPECT_EQ(cmos(0x32), 0x20);
  EXPECT_EQ(cmos(0x0d), 0x80);
}

TEST_F(RtcTest, BinaryAnd12HourFormats) {
  set_cmos(0x0b, 0x04);  // binary, 12-hour
  EXPECT_EQ(cmos(0x04), 0x81) << "1 PM";
  EXPECT_EQ(cmos(0x02), 45);
  EXPECT_EQ(cmos(0x09), 24);
  set_cmos(0x0b, 0x00);  // BCD, 12-hour
  EXPECT_EQ(cmos(0x04), 0x81);
}

TEST_F(RtcTest, TimeFollowsTheClockAcrossTheCentury) {
  Rtc late(queue, irq8, k20991231_235959);
  out8(late, 0, 0x00);
  EXPECT_EQ(in8(late, 1), 0x59);
  clock.advance(1'000'000'000);
  auto read = [&](uint8_t index) {
    out8(late, 0, index);
    return in8(late, 1);
  };
  EXPECT_EQ(read(0x00), 0x00);
  EXPECT_EQ(read(0x04), 0x00);
  EXPECT_EQ(read(0x07), 0x01);
  EXPECT_EQ(read(0x08), 0x01);
  EXPECT_EQ(read(0x09), 0x00);
  EXPECT_EQ(read(0x32), 0x21);
  EXPECT_EQ(read(0x06), 0x06) << "2100-01-01 is a Friday";
}

TEST_F(RtcTest, SetBitFreezesAndLoadsTheWrittenTime) {
  set_cmos(0x0b, 0x82);  // SET, 24-hour BCD
  set_cmos(0x00, 0x00);
  set_cmos(0x02, 0x59);
  set_cmos(0x04, 0x11);
  set_cmos(0x07, 0x31);
  set_cmos(0x08, 0x12);
  set_cmos(0x09, 0x99);
  set_cmos(0x32, 0x19);
  clock.advance(3'000'000'000);
  EXPECT_EQ(cmos(0x00), 0x00) << "frozen while SET";
  set_cmos(0x0b, 0x02);
  EXPECT_EQ(rtc.unix_seconds(), k19991231_115900);
  clock.advance(2'000'000'000);
  EXPECT_EQ(cmos(0x00), 0x02);
}

TEST_F(RtcTest, WritingOneFieldWhileRunningMovesTheClock) {
  set_cmos(0x04, 0x15);
  EXPECT_EQ(rtc.unix_seconds(), k20240229_134530 + 2 * 3600);
  EXPECT_EQ(cmos(0x02), 0x45);
}

TEST_F(RtcTest, UpdateInProgressIsSetJustBeforeEachSecond) {
  EXPECT_EQ(cmos(0x0a), 0x26);
  advance(999'800'000);
  EXPECT_EQ(cmos(0x0a), 0xa6);
  advance(300'000);
  EXPECT_EQ(cmos(0x0a), 0x26);
}

TEST_F(RtcTest, UpdateEndedInterruptAndRegisterCReadClear) {
  set_cmos(0x0b, 0x12);  // UIE, 24-hour
  EXPECT_FALSE(irq8.level());
  advance(999'000'000);
  EXPECT_FALSE(irq8.level());
  advance(1'000'000);
  EXPECT_TRUE(irq8.level());
  EXPECT_EQ(cmos(0x0c) & 0xb0, 0x90) << "IRQF and UF (PF runs too, at 1024 Hz)";
  EXPECT_FALSE(irq8.level());
  EXPECT_EQ(cmos(0x0c) & 0xb0, 0x00);
  advance(1'000'000'000);
  EXPECT_EQ(irq8.rising_edges(), 2);
}

TEST_F(RtcTest, PeriodicInterruptAt1024Hz) {
  set_cmos(0x0b, 0x42);  // PIE
  advance(976'000);
  EXPECT_FALSE(irq8.level());
  advance(600);  // 1/1024 s = 976562.5 ns
  EXPECT_TRUE(irq8.level());
  EXPECT_EQ(cmos(0x0c), 0xc0);
  set_cmos(0x0a, 0x2f);  // 2 Hz
  irq8.reset_count();
  advance(400'000'000);
  EXPECT_EQ(irq8.rising_edges(), 0);
  advance(100'000'000);
  EXPECT_EQ(irq8.rising_edges(), 1);
}

TEST_F(RtcTest, FlagsAreSetEvenWithInterruptsDisabled) {
  advance(1'500'000'000);
  EXPECT_FALSE(irq8.level());
  EXPECT_EQ(cmos(0x0c), 0x50) << "PF and UF, but no IRQF";
}

TEST_F(RtcTest, AlarmFiresAtTheProgrammedTime) {
  set_cmos(0x01, 0x32);  // 13:45:32
  set_cmos(0x03, 0xc0);  // any minute
  set_cmos(0x05, 0x13);
  set_cmos(0x0b, 0x22);  // AIE
  advance(1'000'000'000);
  EXPECT_FALSE(irq8.level());
  advance(1'000'000'000);
  EXPECT_TRUE(irq8.level());
  EXPECT_EQ(cmos(0x0c) & 0xa0, 0xa0);
}

TEST_F(RtcTest, StoppingTheDividerFreezesTime) {
  set_cmos(0x0a, 0x70);
  advance(5'000'000'000);
  EXPECT_EQ(cmos(0x00), 0x30);
  set_cmos(0x0a, 0x26);
  advance(1'000'000'000);
  EXPECT_EQ(cmos(0x00), 0x31);
}

TEST_F(RtcTest, NmiMaskAndNvramBytes) {
  out8(rtc, 0, 0x80 | 0x40);
  EXPECT_TRUE(rtc.nmi_masked());
  out8(rtc, 1, 0x5a);
  out8(rtc, 0, 0x40);
  EXPECT_FALSE(rtc.nmi_masked());
  EXPECT_EQ(in8(rtc, 1), 0x5a);
  set_cmos(0x0d, 0x00);
  EXPECT_EQ(cmos(0x0d), 0x80) << "register D is read-only";
}

TEST_F(RtcTest, MemorySizeFields) {
  rtc.set_memory_size(512ull << 20, 1ull << 30);
  rtc.set_cpu_count(4);
  EXPECT_EQ(cmos(0x15) | cmos(0x16) << 8, 640);
  EXPECT_EQ(cmos(0x17) | cmos(0x18) << 8, 0xffff) << "511 MiB in KiB saturates";
  EXPECT_EQ(cmos(0x30) | cmos(0x31) << 8, 0xffff);
  EXPECT_EQ(cmos(0x34) | cmos(0x35) << 8, (512 - 16) * 16);
  EXPECT_EQ(cmos(0x5b) | cmos(0x5c) << 8 | cmos(0x5d) << 16, 16384);
  EXPECT_EQ(cmos(0x5f), 3);
  rtc.set_memory_size(8ull << 20, 0);
  EXPECT_EQ(cmos(0x17) | cmos(0x18) << 8, 7 * 1024);
}

TEST_F(RtcTest, SaveAndLoadKeepsGuestTimeAndNvram) {
  set_cmos(0x04, 0x20);
  set_cmos(0x40, 0x77);
  set_cmos(0x0b, 0x12);
  advance(250'000'000);
  StateWriter writer;
  rtc.save(writer);

  ManualClock other_clock(7);
  TimerQueue other_queue(other_clock);
  RecordingIrqLine other_irq;
  Rtc copy(other_queue, other_irq, 0);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(copy.unix_seconds(), k20240229_134530 + 7 * 3600);
  out8(copy, 0, 0x40);
  EXPECT_EQ(in8(copy, 1), 0x77);
  other_clock.advance(750'000'000);
  other_queue.run_expired();
  EXPECT_TRUE(other_irq.level()) << "the update interrupt keeps its phase";

  auto truncated = writer.data();
  truncated.resize(20);
  StateReader bad(truncated);
  EXPECT_FALSE(copy.load(bad).has_value());
}

}  // namespace
}  // namespace lamina::hw
