#pragma once
// `lamina vm vnc`: a running VM's screen for any VNC viewer on this machine, through laminad's
// VNC relay (GET /v1/vms/NAME/vnc as a WebSocket), so a remote laminad's VMs are reached over
// its API's TLS and token checks. Listens on --listen (TCP, 127.0.0.1 by default, or
// unix:PATH); each viewer that connects gets its own relay until it or the VM goes. With
// --once, the first viewer's session ends the command.
//
// Stateless function; blocks until interrupted (or the one session ends).

#include <string>

#include "base/error.h"

namespace lamina::cli {

struct VncRelayOptions {
  std::string connect;  // as `lamina vm --connect`
  std::string vm;
  std::string listen = "127.0.0.1:0";  // HOST:PORT or unix:PATH
  bool once = false;
};

// Errors say why the relay cannot start (no such VM, not running, no VNC display, a listen
// address in use).
[[nodiscard]] Result<void> relay_vnc(const VncRelayOptions& options);

}  // namespace lamina::cli
