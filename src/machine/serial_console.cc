#include "machine/serial_console.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <fmt/format.h>

#include "base/output_file.h"

namespace lamina::machine {
namespace {

// Input beyond this waits in the pipe, not in memory: a guest that never reads its console
// cannot make us buffer without bound.
constexpr size_t kMaxPending = 64 * 1024;
// How often the reader looks at its stop token while stdin is silent.
constexpr int kPollMilliseconds = 100;

}  // namespace

Result<std::unique_ptr<SerialConsole>> SerialConsole::open(const SerialConfig& config,
                                                           GrantedFiles* granted) {
  switch (config.kind) {
    case SerialKind::kStdio:
      return std::unique_ptr<SerialConsole>(new SerialConsole(STDOUT_FILENO, false, STDIN_FILENO));
    case SerialKind::kNone: return std::unique_ptr<SerialConsole>(new SerialConsole(-1, false, -1));
    case SerialKind::kFile: {
      auto file = open_output_file(config.file, "--serial", granted);
      if (!file) return fail(file.error());
      return std::unique_ptr<SerialConsole>(new SerialConsole(file->release(), true, -1));
    }
  }
  return fail(ErrorCode::kInternal, "unknown serial kind");
}

void SerialConsole::replace_socket(UniqueFd socket) {
  if (reader_.joinable()) {
    reader_.request_stop();
    reader_.join();
  }
  const int fd = socket.get();
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  bool attached;
  {
    std::lock_guard output_lock(output_mutex_);
    std::lock_guard lock(mutex_);
    socket_ = std::move(socket);
    output_fd_ = fd;
    input_fd_ = fd;
    attached = uart_ != nullptr;
  }
  if (attached) {
    reader_ = std::jthread([this](std::stop_token stop) { read_input(std::move(stop)); });
  }
}

std::unique_ptr<SerialConsole> SerialConsole::open_socket(UniqueFd socket) {
  const int fd = socket.get();
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::unique_ptr<SerialConsole> console(new SerialConsole(fd, false, fd));
  console->socket_ = std::move(socket);
  return console;
}

SerialConsole::SerialConsole(int output_fd, bool owns_output, int input_fd)
    : output_fd_(output_fd), owns_output_(owns_output), input_fd_(input_fd) {
  if (input_fd_ >= 0 && ::isatty(input_fd_)) raw_mode_.emplace(input_fd_);
}

SerialConsole::~SerialConsole() {
  if (reader_.joinable()) {
    reader_.request_stop();
    reader_.join();
  }
  if (owns_output_) ::close(output_fd_);
}

void SerialConsole::attach(hw::Uart16550& uart, StopQueue& stops) {
  {
    std::lock_guard lock(mutex_);
    uart_ = &uart;
    stops_ = &stops;
    if (quit_requested_)
      stops.post({MachineExit::kUserQuit, "quit from the console (Ctrl-A x)", 0});
    flush_pending_locked();
  }
  if (input_fd_ >= 0 && !reader_.joinable()) {
    reader_ = std::jthread([this](std::stop_token stop) { read_input(std::move(stop)); });
  }
}

void SerialConsole::detach() {
  std::lock_guard lock(mutex_);
  uart_ = nullptr;
  stops_ = nullptr;
}

void SerialConsole::write_out(std::string_view bytes) {
  std::lock_guard lock(output_mutex_);
  if (output_fd_ < 0) return;
  while (!bytes.empty()) {
    const ssize_t written = ::write(output_fd_, bytes.data(), bytes.size());
    if (written < 0 && errno == EINTR) continue;
    // A closed or full output (the reader went away) drops console output, not the VM.
    if (written <= 0) return;
    bytes.remove_prefix(static_cast<size_t>(written));
  }
}

void SerialConsole::transmit(std::byte value) {
  const char byte = static_cast<char>(value);
  write_out(std::string_view(&byte, 1));
}

void SerialConsole::receive_space_available() {
  std::lock_guard lock(mutex_);
  flush_pending_locked();
}

void SerialConsole::flush_pending_locked() {
  if (uart_ == nullptr || pending_.empty()) return;
  const size_t taken = uart_->receive(std::as_bytes(std::span(pending_.data(), pending_.size())));
  pending_.erase(0, taken);
}

void SerialConsole::deliver(std::string_view bytes) {
  std::lock_guard lock(mutex_);
  pending_.append(bytes);
  flush_pending_locked();
}

void SerialConsole::read_input(std::stop_token stop) {
  std::array<char, 256> buffer{};
  while (!stop.stop_requested()) {
    bool full = false;
    {
      std::lock_guard lock(mutex_);
      flush_pending_locked();
      full = pending_.size() >= kMaxPending;
    }
    if (full) {
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMilliseconds));
      continue;
    }
    pollfd descriptor{input_fd_, POLLIN, 0};
    const int ready = ::poll(&descriptor, 1, kPollMilliseconds);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;
    const ssize_t count = ::read(input_fd_, buffer.data(), buffer.size());
    if (count < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    // EOF (or an unreadable stdin) ends input; the guest keeps running.
    if (count <= 0) return;
    const std::span<const char> chunk(buffer.data(), static_cast<size_t>(count));
    if (!raw_mode_ || !raw_mode_->active()) {
      deliver(std::string_view(chunk.data(), chunk.size()));
      continue;
    }
    const TerminalEscape::Result filtered = escape_.feed(chunk);
    if (filtered.show_help) write_out(TerminalEscape::help_text());
    if (!filtered.to_guest.empty()) deliver(filtered.to_guest);
    if (filtered.quit) {
      std::lock_guard lock(mutex_);
      quit_requested_ = true;
      if (stops_ != nullptr) {
        stops_->post({MachineExit::kUserQuit, "quit from the console (Ctrl-A x)", 0});
      }
    }
  }
}

}  // namespace lamina::machine
