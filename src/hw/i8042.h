#pragma once
// I8042: the PS/2 keyboard controller at ports 0x60 (data) and 0x64 (status/command), with a
// keyboard and a mouse that answer the probes Linux, SeaBIOS and Windows send (reset, identify,
// enable, LEDs, typematic rate, scan set; mouse reset, identify, rate, resolution, status), and
// the host's input (a display's keyboard and pointer) through keyboard_input() and mouse_input(). It matters for two things: the reset line (command 0xfe, or output port
// bit 0 cleared via 0xd1), reported through a callback, and the A20 gate (output port bit 1, or
// 0xdd/0xdf), reported through another. Also self-test (0xaa -> 0x55), interface tests, the
// command byte, and the aux loopback (0xd3) Linux uses to detect the mouse port and rule out a
// multiplexing controller. References: IBM PS/2 hardware technical reference (8042 commands),
// and the public Linux i8042/atkbd/psmouse probe sequences.
//
// Ownership: borrows IRQ lines; owns its windows. Thread-safety: one mutex; IRQ lines are driven
// with it held, the reset and A20 callbacks after it is released (they may stop vCPUs).

#include <cstdint>
#include <deque>
#include <span>
#include <functional>
#include <mutex>

#include "base/log.h"
#include "hw/device_window.h"
#include "hw/irq_line.h"
#include "hw/stateful.h"

namespace lamina::hw {

class I8042 final : public WindowedDevice, public Stateful {
 public:
  // reset_request: the guest pulsed the CPU reset line. a20_changed: the A20 gate's new state.
  I8042(IrqLine& keyboard_irq, IrqLine& mouse_irq, std::function<void()> reset_request,
        std::function<void(bool enabled)> a20_changed);

  Device& data_port() { return data_window_; }        // map at 0x60, size 1
  Device& command_port() { return command_window_; }  // map at 0x64, size 1

  bool a20_enabled() const;

  // Host input, from any thread. Keys arrive as scan code set 1 bytes (what the controller's
  // translation makes of the keyboard's set 2); when the guest turned translation off they go
  // out in set 2. Dropped while the guest disabled scanning; held in a bounded queue and handed
  // out one byte at a time, each when the guest has read the one before.
  void keyboard_input(std::span<const uint8_t> set1_bytes);
  // A relative pointer move (dy > 0 is up) and the buttons held (bit 0 left, 1 right, 2
  // middle), as one standard PS/2 packet; dropped unless the guest enabled mouse reporting.
  void mouse_input(int dx, int dy, uint8_t buttons);

  void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) override;
  void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) override;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Effects {  // what to do after unlocking
    bool reset = false;
    bool a20_changed = false;
    bool a20 = false;
  };
  void queue(uint8_t value, bool aux);
  void queue_host_input(uint16_t value);  // low byte data, kAuxFlag for mouse data
  void feed_host_input();                 // the next host byte, when the buffer is empty
  void controller_command(uint8_t command, Effects& effects);
  void data_write(uint8_t value, Effects& effects);
  void write_output_port(uint8_t value, Effects& effects);
  void keyboard_command(uint8_t value);
  void mouse_command(uint8_t value);
  uint8_t status() const;
  void apply(const Effects& effects);
  void update_irqs(bool pulse_low);

  IrqLine& keyboard_irq_;
  IrqLine& mouse_irq_;
  std::function<void()> reset_request_;
  std::function<void(bool)> a20_changed_;
  DeviceWindow data_window_;
  DeviceWindow command_window_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  std::deque<uint16_t> output_;  // low byte data, bit 8 set for mouse data
  std::deque<uint16_t> host_input_;  // host keys and mouse packets waiting for output_
  uint8_t command_byte_ = 0x47;  // keyboard and mouse interrupts, system flag, translation
  uint8_t output_port_ = 0xcf;   // reset line high (not in reset), A20 enabled
  uint8_t pending_command_ = 0;  // controller command waiting for its data byte
  bool last_write_was_command_ = false;
  uint8_t keyboard_pending_ = 0;  // keyboard command waiting for its parameter
  bool keyboard_scanning_ = true;
  uint8_t scan_set_ = 2;
  uint8_t mouse_pending_ = 0;
  bool mouse_reporting_ = false;
  uint8_t mouse_rate_ = 100;
  uint8_t mouse_resolution_ = 2;
  bool mouse_scaling_ = false;
  bool keyboard_level_ = false;
  bool mouse_level_ = false;
};

}  // namespace lamina::hw
