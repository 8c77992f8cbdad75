#include "hw/uart16550.h"

#include <gtest/gtest.h>

#include "fakes.h"

namespace lamina::hw {
namespace {

using testing::in8;
using testing::out8;
using testing::RecordingIrqLine;

class BufferBackend final : public SerialBackend {
 public:
  void transmit(std::byte value) override { output.push_back(static_cast<char>(value)); }
  void receive_space_available() override { ++space_notifications; }
  std::string output;
  int space_notifications = 0;
};

constexpr uint64_t kRbr = 0, kIer = 1, kIir = 2, kFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                   kScr = 7;

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

class UartTest : public ::testing::Test {
 protected:
  RecordingIrqLine irq;
  BufferBackend backend;
  Uart16550 uart{"com1", irq, &backend};
};

TEST_F(UartTest, TransmitsToTheBackendWithThrAlwaysEmpty) {
  for (char c : std::string_view("hi\n")) out8(uart, 0, static_cast<uint8_t>(c));
  EXPECT_EQ(backend.output, "hi\n");
  EXPECT_EQ(in8(uart, kLsr) & 0x60, 0x60);
  EXPECT_EQ(in8(uart, kIir), 0x01);
}

TEST_F(UartTest, DivisorLatchSharesTheDataAndIerOffsets) {
  out8(uart, kIer, 0x05);
  out8(uart, kLcr, 0x83);
  out8(uart, 0, 0x01);
  out8(uart, 1, 0x00);
  EXPECT_EQ(in8(uart, 0), 0x01);
  EXPECT_EQ(in8(uart, 1), 0x00);
  EXPECT_EQ(uart.baud_rate(), 115200u);
  out8(uart, kLcr, 0x03);
  EXPECT_EQ(in8(uart, kIer), 0x05);
  EXPECT_EQ(in8(uart, kLcr), 0x03);
  EXPECT_TRUE(backend.output.empty()) << "a divisor write must not transmit";
}

TEST_F(UartTest, ReceivedDataRaisesTheIrqOnlyWithOut2) {
  out8(uart, kIer, 0x01);
  EXPECT_EQ(uart.receive(bytes_of("a")), 1u);
  EXPECT_FALSE(irq.level()) << "MCR.OUT2 gates the IRQ on a PC";
  EXPECT_EQ(in8(uart, kIir), 0x04);
  out8(uart, kMcr, 0x08);
  EXPECT_TRUE(irq.level());
  EXPECT_EQ(in8(uart, kLsr) & 0x01, 0x01);
  EXPECT_EQ(in8(uart, kRbr), 'a');
  EXPECT_FALSE(irq.level());
  EXPECT_EQ(in8(uart, kLsr) & 0x01, 0x00);
  EXPECT_EQ(in8(uart, kIir), 0x01);
}

TEST_F(UartTest, FifoHoldsSixteenBytesAndReportsTriggerAndTimeout) {
  out8(uart, kFcr, 0xc7);  // enable, clear both, trigger at 14
  out8(uart, kIer, 0x01);
  out8(uart, kMcr, 0x08);
  EXPECT_EQ(uart.receive(bytes_of("0123456789")), 10u);
  EXPECT_EQ(in8(uart, kIir), 0xcc) << "below the trigger level: character timeout";
  EXPECT_EQ(uart.receive(bytes_of("abcdefghij")), 6u);
  EXPECT_EQ(in8(uart, kIir), 0xc4);
  std::string drained;
  while (in8(uart, kLsr) & 0x01) drained.push_back(static_cast<char>(in8(uart, kRbr)));
  EXPECT_EQ(drained, "0123456789abcdef");
  EXPECT_EQ(backend.space_notifications, 1);
  EXPECT_FALSE(irq.level());
}

TEST_F(UartTest, WithoutFifoOnlyOneByteIsAccepted) {
  EXPECT_EQ(uart.receive(bytes_of("xy")), 1u);
  EXPECT_EQ(in8(uart, kRbr), 'x');
  EXPECT_EQ(uart.receive(bytes_of("y")), 1u);
}

TEST_F(UartTest, ThrEmptyInterruptIsClearedByIirReadAndRearmedByThrWrite) {
  out8(uart, kMcr, 0x08);
  out8(uart, kIer, 0x02);
  EXPECT_TRUE(irq.level()) << "enabling ETBEI with THR empty raises the interrupt";
  EXPECT_EQ(in8(uart, kIir), 0x02);
  EXPECT_FALSE(irq.level());
  EXPECT_EQ(in8(uart, kIir), 0x01);
  out8(uart, 0, 'x');
  EXPECT_TRUE(irq.level());
  EXPECT_EQ(irq.rising_edges(), 2);
}

TEST_F(UartTest, LoopbackEchoesDataAndModemLines) {
  out8(uart, kMcr, 0x1a);  // loop, OUT2, RTS: the Linux 8250 loopback probe
  EXPECT_EQ(in8(uart, kMsr) & 0xf0, 0x90);
  out8(uart, kMcr, 0x1f);
  EXPECT_EQ(in8(uart, kMsr) & 0xf0, 0xf0);
  out8(uart, 0, 'Q');
  EXPECT_TRUE(backend.output.empty());
  EXPECT_EQ(in8(uart, kRbr), 'Q');
  EXPECT_EQ(uart.receive(bytes_of("z")), 0u) << "the serial input is cut off in loopback";
}

TEST_F(UartTest, ModemStatusDeltasAreReportedOnceAndInterrupt) {
  out8(uart, kIer, 0x08);
  out8(uart, kMcr, 0x18);  // loopback drops CTS/DSR/DCD except OUT2->DCD
  uint8_t status = in8(uart, kMsr);
  EXPECT_EQ(status & 0x0f, 0x03) << "CTS and DSR changed";
  EXPECT_EQ(in8(uart, kMsr) & 0x0f, 0x00);
}

TEST_F(UartTest, OverrunIsALineStatusInterruptAboveReceivedData) {
  out8(uart, kIer, 0x05);
  out8(uart, kMcr, 0x18);
  out8(uart, 0, '1');
  out8(uart, 0, '2');  // no FIFO: overruns
  EXPECT_EQ(in8(uart, kIir), 0x06);
  uint8_t status = in8(uart, kLsr);
  EXPECT_EQ(status & 0x03, 0x03);
  EXPECT_EQ(in8(uart, kLsr) & 0x02, 0x00) << "reading LSR clears OE";
  EXPECT_EQ(in8(uart, kIir), 0x04);
  EXPECT_EQ(in8(uart, kRbr), '1');
}

TEST_F(UartTest, ScratchAndReadOnlyRegistersAndWideAccesses) {
  out8(uart, kScr, 0xa5);
  EXPECT_EQ(in8(uart, kScr), 0xa5);
  out8(uart, kLsr, 0x00);
  EXPECT_EQ(in8(uart, kLsr) & 0x60, 0x60);
  EXPECT_EQ(testing::read_register(uart, kScr, 2), 0xffa5u);
  EXPECT_EQ(in8(uart, 9), 0xff);
  out8(uart, 12, 1);  // out of range: ignored
}

TEST_F(UartTest, SaveAndLoadRoundTrip) {
  out8(uart, kFcr, 0x81);
  out8(uart, kLcr, 0x80);
  out8(uart, 0, 0x03);
  out8(uart, kLcr, 0x1b);
  out8(uart, kIer, 0x01);
  out8(uart, kMcr, 0x0b);
  out8(uart, kScr, 0x42);
  ASSERT_EQ(uart.receive(bytes_of("abc")), 3u);
  EXPECT_EQ(in8(uart, kRbr), 'a');
  StateWriter writer;
  uart.save(writer);

  RecordingIrqLine irq2;
  BufferBackend backend2;
  Uart16550 copy("com1", irq2, &backend2);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_TRUE(reader.at_end());
  EXPECT_TRUE(irq2.level());
  EXPECT_EQ(copy.baud_rate(), 38400u);
  EXPECT_EQ(in8(copy, kLcr), 0x1b);
  EXPECT_EQ(in8(copy, kScr), 0x42);
  EXPECT_EQ(in8(copy, kIir), 0xcc);
  EXPECT_EQ(in8(copy, kRbr), 'b');
  EXPECT_EQ(in8(copy, kRbr), 'c');
  EXPECT_FALSE(irq2.level());
}

TEST_F(UartTest, LoadRejectsACorruptFifoCountAndWrongSections) {
  StateWriter writer;
  writer.begin_section("uart16550", 1);
  for (int i = 0; i < 12; ++i) writer.put_u8(0);
  writer.put_u8(200);
  writer.end_section();
  StateReader reader(writer.data());
  EXPECT_FALSE(uart.load(reader).has_value());

  StateWriter other;
  other.begin_section("pit8254", 1);
  other.end_section();
  StateReader wrong(other.data());
  EXPECT_FALSE(uart.load(wrong).has_value());
}

}  // namespace
}  // namespace lamina::hw
