#pragma once
// TerminalEscape: the "Ctrl-A" escape of an interactive console, as in other VMMs.
// Ctrl-A x quits, Ctrl-A h prints help, Ctrl-A Ctrl-A sends one Ctrl-A to the guest; any
// other byte after Ctrl-A is sent with the Ctrl-A. Everything else goes to the guest as is.
//
// Thread-safety: one instance per console input thread.

#include <cstddef>
#include <span>
#include <string>

namespace lamina::machine {

class TerminalEscape {
 public:
  static constexpr char kEscape = 0x01;  // Ctrl-A

  struct Result {
    std::string to_guest;    // bytes to deliver to the guest's serial port
    bool quit = false;       // the user asked to quit (Ctrl-A x)
    bool show_help = false;  // the user asked for help (Ctrl-A h)
  };

  // Filters one chunk of terminal input; an escape split across chunks is remembered.
  Result feed(std::span<const char> input);

  static const char* help_text();

 private:
  bool after_escape_ = false;
};

}  // namespace lamina::machine
