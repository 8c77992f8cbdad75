#include "machine/terminal_mode.h"

#include <gtest/gtest.h>
#include <pty.h>
#include <unistd.h>

namespace lamina::machine {
namespace {

TEST(TerminalRawMode, DoesNothingOnAPipe) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  {
    TerminalRawMode mode(fds[0]);
    EXPECT_FALSE(mode.active());
  }
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(TerminalRawMode, RawWhileAliveAndRestoredAfter) {
  int controller = -1, terminal = -1;
  ASSERT_EQ(::openpty(&controller, &terminal, nullptr, nullptr, nullptr), 0);
  termios before{};
  ASSERT_EQ(::tcgetattr(terminal, &before), 0);
  ASSERT_TRUE(before.c_lflag & ICANON);
  {
    TerminalRawMode mode(terminal);
    ASSERT_TRUE(mode.active());
    termios during{};
    ASSERT_EQ(::tcgetattr(terminal, &during), 0);
    EXPECT_FALSE(during.c_lflag & ICANON);
    EXPECT_FALSE(during.c_lflag & ISIG);
  }
  termios after{};
  ASSERT_EQ(::tcgetattr(terminal, &after), 0);
  EXPECT_EQ(after.c_lflag, before.c_lflag);
  ::close(controller);
  ::close(terminal);
}

}  // namespace
}  // namespace lamina::machine
