#include "hw/pic8259.h"

#include <gtest/gtest.h>

#include "fakes.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::RecordingIrqLine;

class PicTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The sequence Linux's init_8259A() writes: edge, cascade, ICW4; vectors 0x20 and 0x28.
    Device& master = pic.master_ports();
    Device& slave = pic.slave_ports();
    out8(master, 1, 0xff);
    out8(master, 0, 0x11);
    out8(master, 1, 0x20);
    out8(master, 1, 0x04);
    out8(master, 1, 0x01);
    out8(slave, 0, 0x11);
    out8(slave, 1, 0x28);
    out8(slave, 1, 0x02);
    out8(slave, 1, 0x01);
    out8(master, 1, 0x00);
    out8(slave, 1, 0x00);
  }
  uint8_t master_isr() {
    out8(pic.master_ports(), 0, 0x0b);
    uint8_t isr = in8(pic.master_ports(), 0);
    out8(pic.master_ports(), 0, 0x0a);
    return isr;
  }
  uint8_t slave_isr() {
    out8(pic.slave_ports(), 0, 0x0b);
    uint8_t isr = in8(pic.slave_ports(), 0);
    out8(pic.slave_ports(), 0, 0x0a);
    return isr;
  }
  void eoi_master() { out8(pic.master_ports(), 0, 0x20); }

  RecordingIrqLine intr;
  Pic8259Pair pic{intr};
};

TEST_F(PicTest, EdgeRequestIsAcknowledgedWithItsVectorAndEnded) {
  pic.input(1).pulse();
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(in8(pic.master_ports(), 0), 0x02) << "IRR shows the request";
  EXPECT_EQ(pic.acknowledge(), 0x21);
  EXPECT_FALSE(intr.level());
  EXPECT_EQ(master_isr(), 0x02);
  eoi_master();
  EXPECT_EQ(master_isr(), 0x00);
  EXPECT_FALSE(intr.level());
}

TEST_F(PicTest, InServiceBlocksLowerPrioritiesButNotHigherOnes) {
  pic.input(3).pulse();
  pic.input(5).pulse();
  EXPECT_EQ(pic.acknowledge(), 0x23);
  EXPECT_FALSE(intr.level()) << "IRQ5 must wait for IRQ3's EOI";
  pic.input(1).pulse();
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x21);
  eoi_master();  // ends IRQ1, the highest in service
  EXPECT_EQ(master_isr(), 0x08);
  EXPECT_FALSE(intr.level());
  eoi_master();
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x25);
}

TEST_F(PicTest, SlaveInterruptsCascadeThroughIrq2) {
  pic.input(10).pulse();
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x2a);
  EXPECT_EQ(master_isr(), 0x04);
  EXPECT_EQ(slave_isr(), 0x04);
  out8(pic.slave_ports(), 0, 0x20);
  eoi_master();
  EXPECT_EQ(master_isr() | slave_isr(), 0);
}

TEST_F(PicTest, MaskedRequestsWaitInIrr) {
  out8(pic.master_ports(), 1, 0x10);
  EXPECT_EQ(in8(pic.master_ports(), 1), 0x10);
  pic.input(4).pulse();
  EXPECT_FALSE(intr.level());
  out8(pic.master_ports(), 1, 0x00);
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x24);
}

TEST_F(PicTest, ARequestGoneBeforeAcknowledgeIsSpuriousIrq7Or15) {
  pic.set_elcr(0x0020);  // IRQ5 level-triggered
  pic.set_irq(5, true);
  EXPECT_TRUE(intr.level());
  pic.set_irq(5, false);
  EXPECT_EQ(pic.acknowledge(), 0x27);
  EXPECT_EQ(master_isr(), 0x00) << "a spurious IRQ7 sets no ISR bit";

  pic.input(12).pulse();
  EXPECT_TRUE(intr.level());
  out8(pic.slave_ports(), 1, 0x10);  // masked before the acknowledge
  EXPECT_FALSE(intr.level()) << "the cascade follows the slave's INT level";
  out8(pic.master_ports(), 1, 0x04);  // mask the cascade itself while INT is up
  out8(pic.slave_ports(), 1, 0x00);
  EXPECT_FALSE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x27) << "acknowledge with nothing deliverable is spurious";
}

TEST_F(PicTest, LevelTriggeredRequestsFollowThePinThroughEoi) {
  out8(pic.elcr_ports(), 1, 0x08);  // IRQ11
  EXPECT_EQ(in8(pic.elcr_ports(), 1), 0x08);
  pic.set_irq(11, true);
  EXPECT_EQ(pic.acknowledge(), 0x2b);
  out8(pic.slave_ports(), 0, 0x20);
  eoi_master();
  EXPECT_TRUE(intr.level()) << "the pin is still high";
  pic.set_irq(11, false);
  EXPECT_FALSE(intr.level());
}

TEST_F(PicTest, ElcrKeepsTheSystemIrqsEdgeTriggered) {
  out8(pic.elcr_ports(), 0, 0xff);
  out8(pic.elcr_ports(), 1, 0xff);
  EXPECT_EQ(in8(pic.elcr_ports(), 0), 0xf8);
  EXPECT_EQ(in8(pic.elcr_ports(), 1), 0xde);
  EXPECT_EQ(testing::read_register(pic.elcr_ports(), 0, 2), 0xdef8u);
}

TEST_F(PicTest, EdgeInputNeedsAFallingEdgeToRequestAgain) {
  pic.set_irq(6, true);
  EXPECT_EQ(pic.acknowledge(), 0x26);
  eoi_master();
  pic.set_irq(6, true);
  EXPECT_FALSE(intr.level());
  pic.set_irq(6, false);
  pic.set_irq(6, true);
  EXPECT_TRUE(intr.level());
}

TEST_F(PicTest, AutoEoiLeavesIsrClear) {
  out8(pic.master_ports(), 0, 0x11);
  out8(pic.master_ports(), 1, 0x08);
  out8(pic.master_ports(), 1, 0x04);
  out8(pic.master_ports(), 1, 0x03);  // auto-EOI
  out8(pic.master_ports(), 1, 0x00);
  pic.input(0).pulse();
  EXPECT_EQ(pic.acknowledge(), 0x08);
  EXPECT_EQ(master_isr(), 0x00);
  pic.input(0).pulse();
  EXPECT_TRUE(intr.level()) << "no EOI needed before the next one";
}

TEST_F(PicTest, SpecificEoiAndPriorityRotation) {
  pic.input(1).pulse();
  pic.input(5).pulse();
  out8(pic.master_ports(), 0, 0xc3);  // set priority: IR3 lowest, so IR4 highest
  EXPECT_EQ(pic.acknowledge(), 0x25);
  out8(pic.master_ports(), 0, 0x65);  // specific EOI for IR5
  EXPECT_EQ(master_isr(), 0x00);
  EXPECT_EQ(pic.acknowledge(), 0x21);
  out8(pic.master_ports(), 0, 0xa0);  // rotate on non-specific EOI: IR1 becomes lowest
  pic.input(1).pulse();
  pic.input(2 + 4).pulse();
  EXPECT_EQ(pic.acknowledge(), 0x26) << "IR6 now outranks IR1";
}

TEST_F(PicTest, PollCommandReturnsAndAcknowledgesTheRequest) {
  out8(pic.master_ports(), 0, 0x0c);
  EXPECT_EQ(in8(pic.master_ports(), 0), 0x00) << "nothing pending";
  pic.input(3).pulse();
  out8(pic.master_ports(), 0, 0x0c);
  EXPECT_EQ(in8(pic.master_ports(), 0), 0x83);
  EXPECT_EQ(master_isr(), 0x08);
}

TEST_F(PicTest, SpecialMaskModeLetsLowerPrioritiesThrough) {
  pic.input(3).pulse();
  EXPECT_EQ(pic.acknowledge(), 0x23);
  pic.input(6).pulse();
  EXPECT_FALSE(intr.level());
  out8(pic.master_ports(), 1, 0x08);  // mask the level in service
  out8(pic.master_ports(), 0, 0x68);  // set special mask mode
  EXPECT_TRUE(intr.level());
  EXPECT_EQ(pic.acknowledge(), 0x26);
  out8(pic.master_ports(), 0, 0x48);  // reset special mask mode
}

TEST_F(PicTest, SaveAndLoadRoundTrip) {
  pic.set_elcr(0x0800);
  out8(pic.master_ports(), 1, 0x40);
  pic.input(3).pulse();
  pic.input(4).pulse();
  EXPECT_EQ(pic.acknowledge(), 0x23);
  StateWriter writer;
  pic.save(writer);

  RecordingIrqLine intr2;
  Pic8259Pair copy(intr2);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(in8(copy.master_ports(), 1), 0x40);
  EXPECT_EQ(in8(copy.elcr_ports(), 1), 0x08);
  EXPECT_FALSE(intr2.level());
  out8(copy.master_ports(), 0, 0x20);
  EXPECT_TRUE(intr2.level());
  EXPECT_EQ(copy.acknowledge(), 0x24);

  const std::vector<std::byte>& saved = writer.data();
  ASSERT_GT(saved.size(), 3u);
  const std::vector<std::byte> truncated(saved.begin(), saved.end() - 3);
  StateReader short_reader(truncated);
  EXPECT_FALSE(copy.load(short_reader).has_value());
}

}  // namespace
}  // namespace lamina::hw
