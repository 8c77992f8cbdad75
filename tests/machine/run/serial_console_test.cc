// SerialConsole with a real Uart16550: input from a pipe standing in for stdin (pass-through,
// more bytes than the FIFO holds, EOF) and --serial file:PATH output.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "hw/irq_line.h"
#include "hw/uart16550.h"
#include "machine/serial_console.h"

namespace lamina::machine {
namespace {

class NullIrq final : public hw::IrqLine {
 public:
  void set_level(bool) override {}
};

uint8_t read_register(hw::Uart16550& uart, uint64_t offset) {
  std::byte value{};
  uart.read(offset, std::span(&value, 1));
  return static_cast<uint8_t>(value);
}

// Reads what the guest would see on RBR while LSR.DR is set, until `count` bytes or a timeout.
std::string drain(hw::Uart16550& uart, size_t count) {
  std::string text;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (text.size() < count && std::chrono::steady_clock::now() < deadline) {
    if (read_register(uart, 5) & 1) {
      text.push_back(static_cast<char>(read_register(uart, 0)));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return text;
}

// Puts a pipe's read end on fd 0 for the test's duration (SerialConsole reads stdin).
class StdinPipe {
 public:
  StdinPipe() {
    saved_ = ::dup(STDIN_FILENO);
    int fds[2];
    EXPECT_EQ(::pipe(fds), 0);
    ::dup2(fds[0], STDIN_FILENO);
    ::close(fds[0]);
    write_end_ = fds[1];
  }
  ~StdinPipe() {
    close_write_end();
    ::dup2(saved_, STDIN_FILENO);
    ::close(saved_);
  }
  void write(std::string_view text) {
    EXPECT_EQ(::write(write_end_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  void close_write_end() {
    if (write_end_ >= 0) ::close(write_end_);
    write_end_ = -1;
  }

 private:
  int saved_ = -1;
  int write_end_ = -1;
};

TEST(SerialConsoleTest, PipedInputReachesTheGuestBeyondTheFifoSize) {
  StdinPipe input;
  auto console = SerialConsole::open({SerialKind::kStdio, {}});
  ASSERT_TRUE(console.has_value());
  NullIrq irq;
  hw::Uart16550 uart("com1", irq, console->get());
  std::byte fifo_on{0x01};
  uart.write(2, std::span(&fifo_on, 1));
  StopQueue stops;
  (*console)->attach(uart, stops);
  // 40 bytes, more than the 16-byte FIFO: the rest waits in the console until drained. A
  // Ctrl-A from a pipe is data, not an escape.
  const std::string text = "\x01x the quick brown fox jumps over it!!";
  input.write(text);
  EXPECT_EQ(drain(uart, text.size()), text);
  input.close_write_end();  // EOF ends input, not the machine
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(stops.stopped());
  (*console)->detach();
}

TEST(SerialConsoleTest, FileOutputGetsWhatTheGuestTransmits) {
  const auto path =
      std::filesystem::temp_directory_path() / ("lamina-serial-test-" + std::to_string(::getpid()));
  {
    auto console = SerialConsole::open({SerialKind::kFile, path});
    ASSERT_TRUE(console.has_value());
    NullIrq irq;
    hw::Uart16550 uart("com1", irq, console->get());
    for (char c : std::string("guest says hi\n")) {
      std::byte value{static_cast<uint8_t>(c)};
      uart.write(0, std::span(&value, 1));
    }
  }
  std::ifstream file(path);
  std::stringstream content;
  content << file.rdbuf();
  std::filesystem::remove(path);
  EXPECT_EQ(content.str(), "guest says hi\n");
}

TEST(SerialConsoleTest, UnwritableFileIsAnError) {
  auto console = SerialConsole::open({SerialKind::kFile, "/nonexistent/folder/console.log"});
  ASSERT_FALSE(console.has_value());
  EXPECT_NE(console.error().message().find("/nonexistent/folder/console.log"), std::string::npos);
}

}  // namespace
}  // namespace lamina::machine
