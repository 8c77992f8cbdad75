#pragma once
// ConsoleHub: laminad's end of one running VM's serial console. The worker's first serial port
// is a stream socket (SerialConsole::open_socket on its side); the hub reads what the guest
// prints, appends it to the VM's console log (bounded: the file starts over past kMaxLogBytes),
// keeps the last kBacklogBytes for clients that attach later, and hands it to every listener
// (the console WebSockets). Any number of readers; one writer at a time sends input.
//
// Ownership: owns the socket, the log file and its reader thread; shared (std::shared_ptr) by
// the service and the WebSocket sessions. Thread-safety: every call from any thread; listeners
// run on the hub's reader thread and must not block (they post to their own I/O context).

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "base/error.h"
#include "base/unique_fd.h"

namespace lamina::mgmt {

class ConsoleHub {
 public:
  static constexpr size_t kBacklogBytes = 64 * 1024;
  static constexpr uint64_t kMaxLogBytes = 16 << 20;

  // bytes: output; closed: the VM's side went away (the last call for that listener).
  using Listener = std::function<void(std::string_view bytes, bool closed)>;

  // append: keep what the log holds (re-linking a running VM), else start it empty.
  static Result<std::shared_ptr<ConsoleHub>> start(UniqueFd socket,
                                                   const std::filesystem::path& log,
                                                   bool append = false);
  ~ConsoleHub();
  ConsoleHub(const ConsoleHub&) = delete;
  ConsoleHub& operator=(const ConsoleHub&) = delete;

  struct Subscription {
    uint64_t id = 0;
    std::string backlog;  // the recent output, to show before what follows
    bool closed = false;  // the VM's side is gone already
  };
  Subscription subscribe(Listener listener);
  // After it returns the listener is never called again.
  void unsubscribe(uint64_t id);

  // The one writer: a token, or nullopt while another client holds the input.
  std::optional<uint64_t> claim_writer();
  void release_writer(uint64_t token);
  // Sends input to the guest's serial port; kInvalidArgument without the writer's token.
  [[nodiscard]] Result<void> write_input(uint64_t token, std::string_view bytes);

  std::string backlog() const;

 private:
  ConsoleHub(UniqueFd socket, UniqueFd log);
  void read_output(std::stop_token stop);
  void record(std::string_view bytes);

  UniqueFd socket_;
  UniqueFd log_;
  uint64_t log_bytes_ = 0;  // reader thread only
  mutable std::mutex mutex_;
  std::string backlog_;
  std::map<uint64_t, Listener> listeners_;
  uint64_t next_id_ = 1;
  std::optional<uint64_t> writer_;
  bool closed_ = false;
  std::mutex input_mutex_;  // one write_input at a time, so inputs do not interleave
  std::jthread reader_;
};

}  // namespace lamina::mgmt
