#pragma once
// TerminalRawMode: puts a terminal into raw mode for an interactive guest console and restores
// it on destruction, so Ctrl-C, Ctrl-Z and line editing reach the guest instead of the host.
// Does nothing when the fd is not a terminal (pipes and files in tests).
//
// Ownership: restores the settings it saved; not copyable. Thread-safety: none needed.

#include <termios.h>

namespace lamina::machine {

class TerminalRawMode {
 public:
  explicit TerminalRawMode(int fd);
  ~TerminalRawMode();
  TerminalRawMode(const TerminalRawMode&) = delete;
  TerminalRawMode& operator=(const TerminalRawMode&) = delete;

  bool active() const { return active_; }

 private:
  int fd_;
  bool active_ = false;
  termios saved_{};
};

}  // namespace lamina::machine
