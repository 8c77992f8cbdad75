#pragma once
// `lamina vm console`: attaches the terminal to a running VM's serial console through laminad's
// console WebSocket. On a terminal, stdin goes raw and Ctrl-A x detaches (the VM keeps
// running), Ctrl-A h helps; from a pipe, input passes through as is. Output goes to stdout until
// the VM stops (the server closes) or the user detaches. With `send`, it types that line instead
// and detaches as soon as the server has it (for scripts: no output, no wait for the guest).
//
// Stateless function; blocks until the session ends.

#include <optional>
#include <string>

#include "base/error.h"

namespace lamina::cli {

struct ConsoleAttachOptions {
  std::string connect;  // as `lamina vm --connect`
  std::string vm;
  bool read_only = false;
  // Type this text and a newline, then detach (no output is shown).
  std::optional<std::string> send;
};

// Ends normally on a detach or when the VM stops; errors say why the attach failed (no such
// VM, not running, another client holds the input).
[[nodiscard]] Result<void> attach_console(const ConsoleAttachOptions& options);

}  // namespace lamina::cli
