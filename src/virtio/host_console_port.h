#pragma once
// HostConsolePort: a ConsoleBackend on host file descriptors, for `lamina run --console-port`:
//   stdio        guest output to stdout, stdin to the guest (bytes pass through untouched: no
//                raw mode or escape keys; use it with --serial other than stdio);
//   file:PATH    guest output written to PATH (base/output_file.h: truncated, never through a
//                symbolic link); no input;
//   socket:PATH  a Unix stream socket listening at PATH, mode 0600 (a stale socket file of the
//                user's is replaced; a live one, another user's or a non-socket is refused;
//                the file is removed on close); one client at a time, later ones
//                are refused while one is connected; output waits in the buffer while no
//                client is connected, so nothing the guest wrote before the client came is lost.
// One I/O thread polls the descriptors and an eventfd; buffers are bounded (output 64 KiB,
// input 4 KiB): a full output buffer makes output_ready() false, which holds the guest's
// transmit queue (flow control, as a serial line with handshaking); input is read from the
// host only while there is room. Writes that ignore flow control (the device's emergency
// write register, one byte per guest register write) can push the output past that; at
// kOutputLimit the oldest bytes are dropped and counted (dropped_output_bytes(), logged
// rate-limited), so a guest cannot grow host memory while no client reads.
//
// Ownership: owns its descriptors, the socket file and the I/O thread (stopped and joined by
// the destructor). Thread-safety: see ConsoleBackend; one mutex guards the buffers, a second
// one is held while the listener runs so set_listener() can wait for it.

#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "base/granted_files.h"
#include "base/unique_fd.h"
#include "base/log.h"
#include "base/wakeup_event.h"
#include "virtio/console_backend.h"

namespace lamina::virtio {

class HostConsolePort final : public ConsoleBackend {
 public:
  static constexpr size_t kOutputCapacity = 64 * 1024;
  static constexpr size_t kInputCapacity = 4096;
  // Hard bound of the output buffer: the flow-controlled capacity plus one largest device write
  // (a caller that saw output_ready() may write up to 64 KiB more) never reaches it.
  static constexpr size_t kOutputLimit = 2 * kOutputCapacity;

  static Result<std::unique_ptr<HostConsolePort>> open_stdio();
  // `granted`: where the file or listening socket comes from (base/granted_files.h).
  static Result<std::unique_ptr<HostConsolePort>> open_file(const std::filesystem::path& path,
                                                            GrantedFiles* granted = nullptr);
  static Result<std::unique_ptr<HostConsolePort>> open_socket(const std::filesystem::path& path,
                                                              GrantedFiles* granted = nullptr);
  // The socket open_socket() listens on, without a port (laminad records it for a worker).
  static Result<UniqueFd> listen_socket(const std::filesystem::path& path,
                                        GrantedFiles* granted = nullptr);
  ~HostConsolePort() override;
  HostConsolePort(const HostConsolePort&) = delete;
  HostConsolePort& operator=(const HostConsolePort&) = delete;

  void set_listener(Listener* listener) override;
  size_t input_pending() const override;
  size_t read(std::span<std::byte> out) override;
  bool output_ready() const override;
  void write(std::span<const std::byte> data) override;

  // Guest output waiting for the host side, and the bytes dropped because it hit kOutputLimit.
  size_t output_pending() const;
  uint64_t dropped_output_bytes() const;

 private:
  struct Descriptors {
    int input = -1;   // stdin, or -1
    int output = -1;  // stdout or the file, or -1 (socket mode: the client)
    bool owns_output = false;
    int listen = -1;  // socket mode
    std::filesystem::path socket_path;
  };
  static Result<std::unique_ptr<HostConsolePort>> start(Descriptors descriptors);
  HostConsolePort(Descriptors descriptors, WakeupEvent wakeup);
  void run(std::stop_token stop);
  void notify(bool input, bool output);
  void drop_client();

  Descriptors fds_;
  WakeupEvent wakeup_;
  int client_ = -1;  // socket mode: the connected client (I/O thread only)

  mutable std::mutex mutex_;
  std::deque<std::byte> output_;
  std::deque<std::byte> input_;
  bool input_closed_ = false;
  uint64_t dropped_output_ = 0;
  uint64_t output_erased_ = 0;  // bytes write() dropped from the front (the I/O thread's sends)
  RateLimiter drop_log_{1, std::chrono::seconds(60)};

  std::mutex listener_mutex_;
  Listener* listener_ = nullptr;

  std::jthread thread_;  // last: stopped before the rest is destroyed
};

}  // namespace lamina::virtio
