#pragma once
// VncServer: a VM's screen over VNC (RFB 3.8, RFC 6143) with Debian's libvncserver. One thread
// accepts clients on a listening socket it is given (TCP or Unix, opened before a worker's
// sandbox closes), polls the screen at most kMaxFramesPerSecond times a second, re-renders only
// when the screen's generation changed, sends the rows that differ, and turns clients' key
// events into PS/2 scan codes (keyboard_map.h) and pointer events into relative PS/2 mouse
// moves. It never blocks a vCPU: it only calls the source and input functions, which lock the
// VGA and i8042 briefly. libvncserver parses what clients send; a client that disconnects or
// sends garbage is dropped by it, the VM runs on.
//
// Ownership: owns the listening socket, the libvncserver screen and the thread; the functions
// it is given must stay callable until it is destroyed. Thread-safety: construction and
// destruction on one thread; everything else happens on its own thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>

#include "base/error.h"
#include "base/unique_fd.h"
#include "hw/display/frame.h"

namespace lamina::display {

inline constexpr unsigned kMaxFramesPerSecond = 30;

// A listening TCP socket on host:port (port 0: the kernel picks; see bound_address()).
Result<UniqueFd> listen_tcp(const std::string& host, uint16_t port);
// "HOST:PORT" or the Unix socket path a listening socket is bound to, for logs.
std::string bound_address(int listening);

struct PointerEvent {
  uint32_t x = 0;
  uint32_t y = 0;
  uint32_t width = 0;  // the screen the position is on
  uint32_t height = 0;
  int dx = 0;
  int dy = 0;
  uint8_t buttons = 0;
  int wheel = 0;
  bool operator==(const PointerEvent&) const = default;
};

struct ScreenSource {
  // Changes when the screen may have changed.
  std::function<uint64_t()> generation;
  // The screen now; an error or an empty frame shows as a small black screen.
  std::function<Result<hw::Frame>()> frame;
  // Scan code set 1 bytes for the guest's keyboard.
  std::function<void(std::span<const uint8_t>)> keyboard;
  // The client's pointer: where it is on the screen it was sent, the move since the last
  // event (dy > 0 is up, for a relative PS/2 mouse), the buttons held (PS/2's bits: 0 left,
  // 1 right, 2 middle) and wheel clicks (positive: up). The worker hands it to the guest's
  // tablet when its driver is ready, else to the PS/2 mouse.
  std::function<void(const PointerEvent&)> pointer;
};

class VncServer {
 public:
  // Prepares serving on `listening` (a listening stream socket); `name` is the desktop name
  // clients show; a non-empty `password` makes every client pass RFB's VNC Authentication
  // (RFB 6.2.2, DES challenge-response) first. No thread yet: a worker creates the server
  // before its sandbox (libvncserver asks the host's name) and starts it after (the sandbox
  // needs a single thread).
  static Result<std::unique_ptr<VncServer>> create(UniqueFd listening, ScreenSource source,
                                                   std::string name, std::string password = {});
  // Starts the serving thread (once).
  void start();
  ~VncServer();
  VncServer(const VncServer&) = delete;
  VncServer& operator=(const VncServer&) = delete;

 private:
  struct Screen;
  VncServer(UniqueFd listening, ScreenSource source, std::string name);
  void serve(std::stop_token stop);
  // Re-renders when the screen's generation changed and marks the rows that differ.
  void refresh();

  UniqueFd listening_;
  ScreenSource source_;
  std::string name_;
  std::unique_ptr<Screen> screen_;
  std::jthread thread_;
};

}  // namespace lamina::display
