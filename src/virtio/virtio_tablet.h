#pragma once
// VirtioTablet: an absolute pointer on the virtio input device (virtio 1.2 section 5.8), so a
// VNC client's pointer lands where it points in the guest (a PS/2 mouse only moves relatively,
// and the guest's acceleration makes the two pointers drift apart). Linux drives it with
// virtio_input as an evdev device with ABS_X/ABS_Y in 0..kAbsMax, BTN_LEFT/RIGHT/MIDDLE and
// REL_WHEEL.
//
// Queues: 0 is eventq (the driver offers 8-byte buffers, the device writes one event into
// each), 1 is statusq (LED and similar events from the driver, consumed and returned). Events
// the host posts while the driver has no buffer ready wait in a queue of at most
// kMaxPendingEvents (the oldest reports are dropped beyond that: a guest that never reads
// cannot make the host grow).
//
// Ownership: borrows the transport between activate() and reset(). Thread-safety: post_pointer()
// from any thread (the VNC server's); one mutex serialises it with queue_notify (vCPU threads),
// activate, reset, pause_io/resume_io and save/load.

#include <cstdint>
#include <array>
#include <deque>
#include <mutex>

#include "virtio/virtio_device.h"

namespace lamina::virtio {

// One struct virtio_input_event (5.8.6): Linux's input event type, code and value.
struct InputEvent {
  uint16_t type = 0;
  uint16_t code = 0;
  uint32_t value = 0;
  bool operator==(const InputEvent&) const = default;
};

class VirtioTablet final : public VirtioDevice {
 public:
  static constexpr uint32_t kAbsMax = 32767;
  static constexpr size_t kMaxPendingEvents = 1024;
  // Buttons as PS/2 reports them (bit 0 left, 1 right, 2 middle), the host side's convention.
  static constexpr uint8_t kButtonLeft = 1, kButtonRight = 2, kButtonMiddle = 4;

  std::string_view name() const override { return "virtio-tablet"; }
  DeviceType type() const override { return DeviceType::kInput; }
  uint64_t device_features() const override { return 0; }
  uint16_t queue_count() const override { return 2; }
  uint16_t queue_max_size(uint16_t) const override { return 64; }
  uint32_t config_size() const override;
  void read_config(uint32_t offset, std::span<std::byte> data) override;
  void write_config(uint32_t offset, std::span<const std::byte> data) override;

  [[nodiscard]] Result<void> activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index) override;
  void reset() override;
  void pause_io() override;
  void resume_io() override;

  // The pointer at (x, y) on a width x height screen, the buttons held and wheel clicks
  // (positive: up). Posts the events that changed, then SYN_REPORT.
  void post_pointer(uint32_t x, uint32_t y, uint32_t width, uint32_t height, uint8_t buttons,
                    int wheel);
  // The driver is active and has offered event buffers: pointer input should come here.
  bool driver_ready() const;
  // Events written into the driver's buffers so far (tests, diagnostics).
  uint64_t events_delivered() const;

  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  // The configuration's union for the current select/subsel (5.8.2), and its size.
  void fill_config_locked();
  void deliver_locked();
  void drain_status_locked();
  void fail_locked(const Error& error);  // the driver broke the protocol

  mutable std::mutex mutex_;
  VirtioTransport* transport_ = nullptr;  // set while active
  bool broken_ = false;                   // after device_error(), until reset()
  bool paused_ = false;                   // between pause_io() and resume_io()
  bool buffers_seen_ = false;             // the driver offered event buffers since activate()
  uint8_t select_ = 0;
  uint8_t subsel_ = 0;
  std::array<std::byte, 136> config_{};   // struct virtio_input_config as the driver reads it
  std::deque<InputEvent> pending_;
  // What the guest was last told, so only changes are posted.
  uint32_t last_x_ = UINT32_MAX, last_y_ = UINT32_MAX;
  uint8_t last_buttons_ = 0;
  uint64_t events_delivered_ = 0;
};

}  // namespace lamina::virtio
