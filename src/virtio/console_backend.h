#pragma once
// ConsoleBackend: the host end of a virtio console port, as the device model sees it: a byte
// stream with bounded buffers both ways and a listener told when input arrives or output space
// frees up, so the device takes guest buffers only when it can finish them (it never holds a
// descriptor chain across calls, which keeps its saved state empty).
//
// Thread-safety: every member may be called from any thread. The backend calls the listener
// from its own thread and never while holding a lock the device could be waiting for; after
// set_listener() returns, the previous listener is not running and will not be called again.

#include <cstddef>
#include <span>

namespace lamina::virtio {

class ConsoleBackend {
 public:
  class Listener {
   public:
    virtual void input_available() = 0;  // read() has bytes
    virtual void output_space() = 0;     // output_ready() became true

   protected:
    ~Listener() = default;
  };

  virtual ~ConsoleBackend() = default;

  virtual void set_listener(Listener* listener) = 0;

  // Host input waiting for the guest, and taking it (returns the bytes moved).
  virtual size_t input_pending() const = 0;
  virtual size_t read(std::span<std::byte> out) = 0;

  // Whether the output buffer is below its capacity; write() takes everything it is given (a
  // caller checks output_ready() first and bounds what it writes per call).
  virtual bool output_ready() const = 0;
  virtual void write(std::span<const std::byte> data) = 0;
};

}  // namespace lamina::virtio
