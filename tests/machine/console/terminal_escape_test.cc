#include "machine/terminal_escape.h"

#include <gtest/gtest.h>

#include <string_view>

namespace lamina::machine {
namespace {

TerminalEscape::Result feed(TerminalEscape& escape, std::string_view text) {
  return escape.feed(std::span<const char>(text.data(), text.size()));
}

TEST(TerminalEscape, PassesOrdinaryInputThrough) {
  TerminalEscape escape;
  auto result = feed(escape, "ls -l\r\x03");
  EXPECT_EQ(result.to_guest, "ls -l\r\x03");
  EXPECT_FALSE(result.quit);
}

TEST(TerminalEscape, CtrlAXQuitsAndDropsTheRest) {
  TerminalEscape escape;
  auto result = feed(escape, "ab\x01xcd");
  EXPECT_EQ(result.to_guest, "ab");
  EXPECT_TRUE(result.quit);
}

TEST(TerminalEscape, EscapeSplitAcrossChunks) {
  TerminalEscape escape;
  auto first = feed(escape, "a\x01");
  EXPECT_EQ(first.to_guest, "a");
  EXPECT_FALSE(first.quit);
  auto second = feed(escape, "x");
  EXPECT_TRUE(second.quit);
}

TEST(TerminalEscape, DoubleCtrlASendsOneAndOtherKeysPassWithIt) {
  TerminalEscape escape;
  EXPECT_EQ(feed(escape, "\x01\x01").to_guest, "\x01");
  EXPECT_EQ(feed(escape, "\x01q").to_guest, "\x01q");
  auto help = feed(escape, "\x01h");
  EXPECT_TRUE(help.show_help);
  EXPECT_EQ(help.to_guest, "");
}

}  // namespace
}  // namespace lamina::machine
