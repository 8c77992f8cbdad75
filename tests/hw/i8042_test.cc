#include "hw/i8042.h"

#include <gtest/gtest.h>

#include "fakes.h"
#include "hw/debug_exit.h"
#include "hw/port92.h"
#include "hw/post_code_port.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::RecordingIrqLine;

class I8042Test : public ::testing::Test {
 protected:
  uint8_t status() { return in8(controller.command_port(), 0); }
  uint8_t data() { return in8(controller.data_port(), 0); }
  void command(uint8_t value) { out8(controller.command_port(), 0, value); }
  void write_data(uint8_t value) { out8(controller.data_port(), 0, value); }
  std::vector<uint8_t> drain() {
    std::vector<uint8_t> bytes;
    while (status() & 0x01) bytes.push_back(data());
    return bytes;
  }

  RecordingIrqLine keyboard_irq, mouse_irq;
  int resets = 0;
  std::vector<bool> a20_changes;
  I8042 controller{keyboard_irq, mouse_irq, [this] { ++resets; },
                   [this](bool enabled) { a20_changes.push_back(enabled); }};
};

TEST_F(I8042Test, CommandFeRequestsAReset) {
  command(0xfe);
  EXPECT_EQ(resets, 1);
  command(0xff);  // pulses no line
  EXPECT_EQ(resets, 1);
}

TEST_F(I8042Test, OutputPortControlsResetAndA20) {
  EXPECT_TRUE(controller.a20_enabled());
  command(0xd0);
  uint8_t port = data();
  EXPECT_EQ(port & 0x03, 0x03);
  command(0xd1);
  write_data(port & ~0x02);
  EXPECT_FALSE(controller.a20_enabled());
  EXPECT_EQ(a20_changes, std::vector<bool>{false});
  command(0xdf);
  EXPECT_TRUE(controller.a20_enabled());
  command(0xd1);
  write_data(0x02);  // bit 0 low: reset
  EXPECT_EQ(resets, 1);
}

TEST_F(I8042Test, SelfTestInterfaceTestsAndCommandByte) {
  command(0xaa);
  EXPECT_EQ(drain(), std::vector<uint8_t>{0x55});
  EXPECT_TRUE(status() & 0x04) << "system flag after self-test";
  command(0xab);
  EXPECT_EQ(drain(), std::vector<uint8_t>{0x00});
  command(0xa9);
  EXPECT_EQ(drain(), std::vector<uint8_t>{0x00});
  command(0x60);
  EXPECT_TRUE(status() & 0x08) << "last write went to the command port";
  write_data(0x65);
  EXPECT_FALSE(status() & 0x08);
  command(0x20);
  EXPECT_EQ(drain(), std::vector<uint8_t>{0x65});
}

TEST_F(I8042Test, KeyboardAnswersIdentifyWithAnInterruptPerByte) {
  command(0x60);
  write_data(0x07);  // interrupts on, no translation
  keyboard_irq.reset_count();
  write_data(0xf2);
  EXPECT_TRUE(keyboard_irq.level());
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xab, 0x83}));
  EXPECT_EQ(keyboard_irq.rising_edges(), 3) << "each byte is its own interrupt";
  EXPECT_FALSE(keyboard_irq.level());
  command(0x60);
  write_data(0x47);  // translation on: the controller translates the ID
  write_data(0xf2);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xab, 0x41}));
}

TEST_F(I8042Test, HostKeysArriveOneByteAtATimeInTheGuestsScanSet) {
  // Translation on (the reset default): set 1 as given, one interrupt per byte.
  keyboard_irq.reset_count();
  const uint8_t down_arrow[] = {0xe0, 0x50, 0xe0, 0xd0};  // press, release
  controller.keyboard_input(down_arrow);
  EXPECT_TRUE(keyboard_irq.level());
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xe0, 0x50, 0xe0, 0xd0}));
  EXPECT_EQ(keyboard_irq.rising_edges(), 4);
  // Translation off: set 2, a release is 0xF0 before the make code.
  command(0x60);
  write_data(0x07);
  const uint8_t a_key[] = {0x1e, 0x9e};
  controller.keyboard_input(a_key);
  controller.keyboard_input(down_arrow);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x1c, 0xf0, 0x1c, 0xe0, 0x72, 0xe0, 0xf0, 0x72}));
  // Scanning disabled (0xF5): host keys are dropped.
  write_data(0xf5);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa}));
  controller.keyboard_input(a_key);
  EXPECT_TRUE(drain().empty());
}

TEST_F(I8042Test, HostInputWaitingForTheGuestIsBounded) {
  std::vector<uint8_t> flood(100000, 0x1e);
  controller.keyboard_input(flood);
  const std::vector<uint8_t> read = drain();
  EXPECT_GT(read.size(), 16u);
  EXPECT_LT(read.size(), 4096u);
}

TEST_F(I8042Test, HostPointerMovesAreStandardPackets) {
  controller.mouse_input(5, -3, 1);  // reporting is off: dropped
  EXPECT_TRUE(drain().empty());
  command(0xd4);
  write_data(0xf4);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa}));
  mouse_irq.reset_count();
  controller.mouse_input(5, -3, 1);
  EXPECT_TRUE(status() & 0x20) << "aux data";
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x29, 0x05, 0xfd}));
  EXPECT_EQ(mouse_irq.rising_edges(), 3);
  controller.mouse_input(1000, 0, 0);  // clamped to what 9 bits hold
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0x08, 0xff, 0x00}));
}

TEST_F(I8042Test, KeyboardCommandsWithParameters) {
  write_data(0xff);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xaa}));
  write_data(0xed);
  write_data(0x07);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xfa}));
  write_data(0xf0);
  write_data(0x00);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xfa, 0x02}));
  write_data(0xee);
  EXPECT_EQ(drain(), std::vector<uint8_t>{0xee});
  write_data(0x12);
  EXPECT_EQ(drain(), std::vector<uint8_t>{0xfe});
}

TEST_F(I8042Test, AuxLoopbackSetsAuxDataAndIrq12AndRulesOutMux) {
  mouse_irq.reset_count();
  // Linux's i8042_set_mux_mode probe: a plain loopback of 0xa5 means no multiplexer.
  for (uint8_t value : {0xf0, 0xf6, 0xa5}) {
    command(0xd3);
    write_data(value);
    EXPECT_EQ(status() & 0x21, 0x21);
    EXPECT_EQ(data(), value);
  }
  EXPECT_EQ(mouse_irq.rising_edges(), 3);
  EXPECT_EQ(keyboard_irq.rising_edges(), 0);
}

TEST_F(I8042Test, MouseCommandsThroughD4) {
  command(0xd4);
  write_data(0xff);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xaa, 0x00}));
  command(0xd4);
  write_data(0xf3);
  command(0xd4);
  write_data(200);
  command(0xd4);
  write_data(0xf4);
  command(0xd4);
  write_data(0xe9);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0xfa, 0xfa, 0xfa, 0x20, 0x02, 200}));
  command(0xd4);
  write_data(0xf2);
  EXPECT_EQ(drain(), (std::vector<uint8_t>{0xfa, 0x00}));
}

TEST_F(I8042Test, DisabledInterruptsKeepLinesLowAndTheQueueIsBounded) {
  command(0x60);
  write_data(0x00);
  for (int i = 0; i < 40; ++i) write_data(0xee);
  EXPECT_FALSE(keyboard_irq.level());
  EXPECT_EQ(drain().size(), 16u);
  EXPECT_EQ(data(), 0x00) << "an empty buffer reads without blocking";
}

TEST_F(I8042Test, UnknownCommandsAreIgnored) {
  command(0x05);
  command(0xc7);
  EXPECT_TRUE(drain().empty());
  EXPECT_EQ(resets, 0);
}

TEST_F(I8042Test, SaveAndLoadRoundTrip) {
  command(0x60);
  write_data(0x03);
  command(0xdd);
  write_data(0xf2);
  EXPECT_EQ(data(), 0xfa);
  StateWriter writer;
  controller.save(writer);
  RecordingIrqLine k2, m2;
  I8042 copy(k2, m2, nullptr, nullptr);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_FALSE(copy.a20_enabled());
  EXPECT_TRUE(k2.level());
  EXPECT_EQ(in8(copy.data_port(), 0), 0xab);
  EXPECT_EQ(in8(copy.data_port(), 0), 0x83);
  out8(copy.command_port(), 0, 0x20);
  EXPECT_EQ(in8(copy.data_port(), 0), 0x03);
}

TEST(DebugExit, StatusIsValueShiftedWithTheLowBitSet) {
  std::vector<uint32_t> statuses;
  DebugExit port([&](uint32_t status) { statuses.push_back(status); });
  out8(port, 0, 0);
  out8(port, 0, 0x21);
  testing::write32(port, 0, 0x100);
  EXPECT_EQ(statuses, (std::vector<uint32_t>{1, 0x43, 0x201}));
  EXPECT_EQ(in8(port, 0), 0xff);
}

TEST(PostCodePort, KeepsTheLastCodeAndReadsOnes) {
  PostCodePort port;
  out8(port, 0, 0x55);
  out8(port, 0, 0xaa);
  EXPECT_EQ(port.last_code(), 0xaa);
  EXPECT_EQ(in8(port, 0), 0xff);
  StateWriter writer;
  port.save(writer);
  PostCodePort copy;
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(copy.last_code(), 0xaa);
}

}  // namespace
}  // namespace lamina::hw

namespace lamina::hw {
namespace {

TEST(Port92, FastA20AndFastReset) {
  int resets = 0;
  std::vector<bool> a20;
  Port92 port([&] { ++resets; }, [&](bool enabled) { a20.push_back(enabled); });
  EXPECT_EQ(testing::in8(port, 0), 0x02);
  testing::out8(port, 0, 0x00);
  EXPECT_FALSE(port.a20_enabled());
  testing::out8(port, 0, 0x02);
  EXPECT_EQ(a20, (std::vector<bool>{false, true}));
  EXPECT_EQ(resets, 0);
  testing::out8(port, 0, 0x03);
  EXPECT_EQ(resets, 1);
  EXPECT_EQ(testing::in8(port, 0), 0x02) << "the reset bit does not stick";
}

TEST(Port92, SaveAndLoad) {
  Port92 port(nullptr, nullptr);
  testing::out8(port, 0, 0x00);
  StateWriter writer;
  port.save(writer);
  DebugExit exit_port(nullptr);
  exit_port.save(writer);
  Port92 copy(nullptr, nullptr, true);
  DebugExit exit_copy(nullptr);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  ASSERT_TRUE(exit_copy.load(reader).has_value());
  EXPECT_FALSE(copy.a20_enabled());
  EXPECT_TRUE(reader.at_end());
}

}  // namespace
}  // namespace lamina::hw
