#include "hw/pit8254.h"

#include <gtest/gtest.h>

#include "fakes.h"
#include "hw/system_control_port.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::RecordingIrqLine;

constexpr uint64_t kHz = Pit8254::kFrequencyHz;

class PitTest : public ::testing::Test {
 protected:
  // Moves the clock to exactly `ticks` PIT ticks after the start, servicing due timers.
  void advance_to_tick(uint64_t ticks) {
    clock.set(start + ticks_to_ns(ticks, kHz));
    queue.run_expired();
  }
  uint16_t read_count(unsigned channel) {
    uint8_t low = in8(pit, channel);
    return static_cast<uint16_t>(low | (in8(pit, channel) << 8));
  }
  void program(unsigned channel, uint8_t control, uint16_t count) {
    out8(pit, 3, control);
    out8(pit, channel, count & 0xff);
    out8(pit, channel, count >> 8);
  }

  const uint64_t start = 1'000'000;
  ManualClock clock{start};
  TimerQueue queue{clock};
  RecordingIrqLine irq0;
  Pit8254 pit{queue, irq0};
  SystemControlPort port61{pit, clock};
};

TEST_F(PitTest, Mode2RaisesIrq0OncePerPeriod) {
  program(0, 0x34, 1193);  // Linux's periodic tick: channel 0, lo/hi, mode 2
  irq0.reset_count();
  advance_to_tick(1192);
  EXPECT_EQ(irq0.rising_edges(), 0);
  advance_to_tick(1193);
  EXPECT_EQ(irq0.rising_edges(), 1);
  for (uint64_t period = 2; period <= 10; ++period) advance_to_tick(1193 * period);
  EXPECT_EQ(irq0.rising_edges(), 10);
  EXPECT_TRUE(irq0.level());
}

TEST_F(PitTest, Mode2MissedPeriodsCoalesceIntoOneInterrupt) {
  program(0, 0x34, 1000);
  irq0.reset_count();
  advance_to_tick(10'500);
  EXPECT_EQ(irq0.rising_edges(), 1);
  EXPECT_EQ(queue.next_deadline(), start + ticks_to_ns(11'000, kHz));
}

TEST_F(PitTest, TinyPeriodsAreClampedOnTheHostSide) {
  program(0, 0x34, 2);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(queue.next_deadline().has_value());
    clock.set(*queue.next_deadline());
    EXPECT_EQ(queue.run_expired(), 1u);
  }
  EXPECT_GE(*queue.next_deadline() - clock.now_ns(), Pit8254::kMinimumPeriodNs);
}

TEST_F(PitTest, Mode0RaisesOutAtTerminalCountAndHoldsIt) {
  program(0, 0x30, 100);
  EXPECT_FALSE(irq0.level());
  advance_to_tick(99);
  EXPECT_FALSE(irq0.level());
  advance_to_tick(100);
  EXPECT_TRUE(irq0.level());
  advance_to_tick(5000);
  EXPECT_EQ(irq0.rising_edges(), 1);
  EXPECT_FALSE(queue.next_deadline().has_value()) << "one-shot: nothing more to fire";
  out8(pit, 3, 0x30);
  EXPECT_FALSE(irq0.level()) << "a control word drives OUT low in mode 0";
}

TEST_F(PitTest, CountsDownAndWrapsInMode0) {
  program(0, 0x30, 100);
  advance_to_tick(40);
  EXPECT_EQ(read_count(0), 60);
  advance_to_tick(101);
  EXPECT_EQ(read_count(0), 0xffff);
}

TEST_F(PitTest, CounterLatchFreezesTheValueUntilRead) {
  program(0, 0x34, 1000);
  advance_to_tick(300);
  out8(pit, 3, 0x00);  // latch channel 0
  advance_to_tick(450);
  out8(pit, 3, 0x00);  // ignored: already latched
  EXPECT_EQ(read_count(0), 700);
  EXPECT_EQ(read_count(0), 550) << "live again after the latched bytes were read";
}

TEST_F(PitTest, ReadBackLatchesStatusAndCount) {
  program(0, 0x34, 1000);
  advance_to_tick(10);
  out8(pit, 3, 0xc2);  // read-back: count and status of channel 0
  EXPECT_EQ(in8(pit, 0), 0x80 | 0x34) << "OUT high, lo/hi, mode 2, binary";
  EXPECT_EQ(read_count(0), 990);
  out8(pit, 3, 0xb0);  // channel 2 control word without a count: null count
  out8(pit, 3, 0xe8);  // status only, channel 2
  EXPECT_EQ(in8(pit, 2), 0x40 | 0x30);
}

TEST_F(PitTest, BcdCountsInDecimal) {
  program(0, 0x31, 0x0100);  // mode 0, BCD, count 100
  advance_to_tick(30);
  EXPECT_EQ(read_count(0), 0x0070);
  program(0, 0x35, 0x0000);  // BCD 0 means 10000
  advance_to_tick(30 + 100);
  EXPECT_EQ(read_count(0), 0x9900);
}

TEST_F(PitTest, LowAndHighByteOnlyAccess) {
  out8(pit, 3, 0x10);  // channel 0, low byte only, mode 0
  out8(pit, 0, 50);
  advance_to_tick(20);
  EXPECT_EQ(in8(pit, 0), 30);
  EXPECT_EQ(in8(pit, 0), 30) << "no flip-flop in low-only mode";
  out8(pit, 3, 0x20);  // high byte only
  out8(pit, 0, 0x01);  // count 256
  advance_to_tick(20 + 16);
  EXPECT_EQ(in8(pit, 0), 0x00) << "256 - 16 = 0xf0: high byte 0";
}

TEST_F(PitTest, Channel2GateAndOutputThroughPort61AsLinuxCalibrates) {
  // native_calibrate_tsc's PIT path: gate high, speaker off, channel 2 mode 0.
  out8(port61, 0, static_cast<uint8_t>((in8(port61, 0) & ~0x02) | 0x01));
  EXPECT_TRUE(pit.channel2_gate());
  program(2, 0xb0, 11932);  // about 10 ms
  advance_to_tick(11931);
  EXPECT_EQ(in8(port61, 0) & 0x20, 0);
  advance_to_tick(11932);
  EXPECT_EQ(in8(port61, 0) & 0x20, 0x20);
  EXPECT_EQ(in8(port61, 0) & 0x0f, 0x01);
  EXPECT_EQ(irq0.rising_edges(), 0) << "channel 2 has no IRQ";
}

TEST_F(PitTest, GateLowSuspendsCountingInMode0) {
  program(2, 0xb0, 1000);
  advance_to_tick(500);
  EXPECT_EQ(read_count(2), 1000) << "gate low: not counting yet";
  out8(port61, 0, 0x01);
  advance_to_tick(700);
  // Starting the gate between two input clocks may cost a fraction of a tick.
  EXPECT_NEAR(read_count(2), 800, 1);
  out8(port61, 0, 0x00);
  uint16_t paused = read_count(2);
  advance_to_tick(900);
  EXPECT_EQ(read_count(2), paused);
}

TEST_F(PitTest, Mode1StartsOnAGateRisingEdge) {
  program(2, 0xb2, 100);  // channel 2, mode 1
  EXPECT_TRUE(pit.channel2_output());
  out8(port61, 0, 0x01);
  EXPECT_FALSE(pit.channel2_output());
  advance_to_tick(100);
  EXPECT_TRUE(pit.channel2_output());
}

TEST_F(PitTest, Mode3IsASquareWave) {
  out8(port61, 0, 0x01);
  program(2, 0xb6, 100);
  advance_to_tick(10);
  EXPECT_TRUE(pit.channel2_output());
  advance_to_tick(60);
  EXPECT_FALSE(pit.channel2_output());
  advance_to_tick(110);
  EXPECT_TRUE(pit.channel2_output());
}

TEST_F(PitTest, Mode4StrobesOnce) {
  program(0, 0x38, 50);
  irq0.reset_count();
  advance_to_tick(50);
  EXPECT_EQ(irq0.rising_edges(), 1);
  advance_to_tick(500);
  EXPECT_EQ(irq0.rising_edges(), 1);
}

TEST_F(PitTest, Port61SaveAndLoadKeepsItsLatch) {
  out8(port61, 0, 0x0d);
  StateWriter writer;
  port61.save(writer);
  SystemControlPort copy(pit, clock);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(in8(copy, 0) & 0x0f, 0x0d);
}

TEST_F(PitTest, RefreshBitToggles) {
  uint8_t first = in8(port61, 0) & 0x10;
  clock.advance(15'085);
  EXPECT_NE(in8(port61, 0) & 0x10, first);
}

TEST_F(PitTest, SaveAndLoadCarryElapsedTicksToAnotherClock) {
  program(0, 0x34, 5000);
  advance_to_tick(1234);
  out8(pit, 3, 0x80);  // control word only for channel 2: keeps a distinct state
  StateWriter writer;
  pit.save(writer);

  ManualClock other_clock(42);
  TimerQueue other_queue(other_clock);
  RecordingIrqLine other_irq;
  Pit8254 copy(other_queue, other_irq);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_TRUE(other_irq.level());
  uint8_t low = in8(copy, 0);
  EXPECT_EQ(low | (in8(copy, 0) << 8), 5000 - 1234);
  other_clock.advance(ticks_to_ns(5000 - 1234, kHz));
  other_irq.reset_count();
  other_queue.run_expired();
  EXPECT_EQ(other_irq.rising_edges(), 1);

  // A mode byte of 9 must be refused.
  StateWriter bad;
  bad.begin_section("pit8254", 1);
  for (int channel = 0; channel < 3; ++channel) {
    bad.put(uint32_t{100}, uint8_t{9}, uint8_t{3}, false, true, true, false, true, uint64_t{0},
            false, uint8_t{0}, false, false, uint16_t{0}, false, uint8_t{0});
  }
  bad.end_section();
  StateReader bad_reader(bad.data());
  EXPECT_FALSE(copy.load(bad_reader).has_value());
}

}  // namespace
}  // namespace lamina::hw
