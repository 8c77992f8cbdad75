#pragma once
// SerialConsole: the host end of the guest's first serial port for `lamina run`. Output goes
// to a file descriptor (stdout, or a file for --serial file:PATH); input comes from stdin
// through a reader thread: on a terminal it is put in raw mode and filtered by TerminalEscape
// (Ctrl-A x quits), from a pipe or file it passes through untouched, and EOF just ends input.
// Bytes the UART's FIFO refuses wait here until the guest drains it (receive_space_available).
//
// Ownership: owns the output file (when it opened one), the raw-mode guard and the reader
// thread; borrows the UART and StopQueue given to attach(), which stay valid until detach().
// Thread-safety: transmit() and receive_space_available() from vCPU threads; attach/detach
// from the run-loop thread; one mutex guards the UART pointer and the pending input.

#include <cstddef>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/error.h"
#include "base/unique_fd.h"
#include "hw/uart16550.h"
#include "machine/machine_exit.h"
#include "base/granted_files.h"
#include "machine/terminal_escape.h"
#include "machine/terminal_mode.h"
#include "machine/vm_config.h"

namespace lamina::machine {

class SerialConsole final : public hw::SerialBackend {
 public:
  // kStdio: stdout and stdin; kFile: writes the file (created or truncated), no input;
  // kNone: output dropped, no input. `granted`: where the file comes from (base/output_file.h).
  static Result<std::unique_ptr<SerialConsole>> open(const SerialConfig& config,
                                                     GrantedFiles* granted = nullptr);
  // Output to and input from a connected stream socket (a worker's console link to laminad).
  // Output never blocks the guest: what the socket cannot take at once is dropped.
  static std::unique_ptr<SerialConsole> open_socket(UniqueFd socket);
  // Replaces the socket of an open_socket() console (laminad restarted and linked again); the
  // input thread restarts on the new one. From any thread but the console's own.
  void replace_socket(UniqueFd socket);
  ~SerialConsole() override;
  SerialConsole(const SerialConsole&) = delete;
  SerialConsole& operator=(const SerialConsole&) = delete;

  // Connects input to a machine's UART (and Ctrl-A x to its stop queue); starts the reader
  // thread on the first call.
  void attach(hw::Uart16550& uart, StopQueue& stops);
  void detach();

  // Ctrl-A x was typed. Sticky: a quit typed while no machine is attached (between a reset and
  // the next boot) is posted to the next machine attached.
  bool quit_requested() const {
    std::lock_guard lock(mutex_);
    return quit_requested_;
  }

  void transmit(std::byte value) override;
  void receive_space_available() override;

 private:
  SerialConsole(int output_fd, bool owns_output, int input_fd);
  void read_input(std::stop_token stop);
  void deliver(std::string_view bytes);
  // Offers pending input to the UART; the caller holds mutex_.
  void flush_pending_locked();
  void write_out(std::string_view bytes);

  int output_fd_;
  bool owns_output_;
  int input_fd_;  // -1: no input
  UniqueFd socket_;  // open_socket(): both output_fd_ and input_fd_
  std::mutex output_mutex_;  // guards output_fd_ (and socket_) against replace_socket()
  std::optional<TerminalRawMode> raw_mode_;
  TerminalEscape escape_;
  mutable std::mutex mutex_;
  bool quit_requested_ = false;
  hw::Uart16550* uart_ = nullptr;
  StopQueue* stops_ = nullptr;
  std::string pending_;
  std::jthread reader_;
};

}  // namespace lamina::machine
