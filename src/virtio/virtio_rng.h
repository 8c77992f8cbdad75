#pragma once
// VirtioRng: the virtio entropy device (virtio 1.2 section 5.4): one request queue whose
// device-writable buffers the device fills from the host's getrandom(2). No feature bits and no
// configuration space. Each request is filled up to kMaxBytesPerRequest (the used length says
// how much), so a guest offering huge buffers cannot make one kick drain the host's pool or
// stall its vCPU for long; a kick handles at most one queue's worth of requests.
//
// Requests are served on the notifying vCPU thread: filling a few hundred bytes from getrandom
// costs less than handing the work to a thread.
//
// Ownership: borrows the transport between activate() and reset(). Thread-safety: one mutex
// serialises queue_notify (from any vCPU), activate and reset.

#include <cstdint>
#include <mutex>

#include "virtio/virtio_device.h"

namespace lamina::virtio {

class VirtioRng final : public VirtioDevice {
 public:
  static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;

  std::string_view name() const override { return "virtio-rng"; }
  DeviceType type() const override { return DeviceType::kEntropy; }
  uint64_t device_features() const override { return 0; }
  uint16_t queue_count() const override { return 1; }
  uint32_t config_size() const override { return 0; }
  void read_config(uint32_t, std::span<std::byte>) override {}

  [[nodiscard]] Result<void> activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index) override;
  void reset() override;

  // Stateless beyond the queue, which the transport saves: an empty, versioned section.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

  // Bytes handed to the guest so far (tests, diagnostics).
  uint64_t bytes_served() const;

 private:
  void serve_locked();

  mutable std::mutex mutex_;
  VirtioTransport* transport_ = nullptr;  // set while active
  bool broken_ = false;                   // after device_error(), until reset()
  uint64_t bytes_served_ = 0;
};

}  // namespace lamina::virtio
