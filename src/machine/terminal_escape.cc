#include "machine/terminal_escape.h"

namespace lamina::machine {

TerminalEscape::Result TerminalEscape::feed(std::span<const char> input) {
  Result result;
  for (char byte : input) {
    if (!after_escape_) {
      if (byte == kEscape) {
        after_escape_ = true;
      } else {
        result.to_guest += byte;
      }
      continue;
    }
    after_escape_ = false;
    switch (byte) {
      case 'x':
      case 'X':
        result.quit = true;
        // Whatever follows the quit request is not for the guest.
        return result;
      case 'h':
      case 'H':
      case '?':
        result.show_help = true;
        break;
      case kEscape:
        result.to_guest += kEscape;
        break;
      default:
        result.to_guest += kEscape;
        result.to_guest += byte;
        break;
    }
  }
  return result;
}

const char* TerminalEscape::help_text() {
  return "\r\nlamina console: Ctrl-A x  quit the VM\r\n"
         "                Ctrl-A h  this help\r\n"
         "                Ctrl-A Ctrl-A  send Ctrl-A to the guest\r\n";
}

}  // namespace lamina::machine
