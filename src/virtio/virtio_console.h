#pragma once
// VirtioConsole: the virtio console device (virtio 1.2 section 5.3) with one port and without
// VIRTIO_CONSOLE_F_MULTIPORT: receiveq (0) carries host input to the guest, transmitq (1) guest
// output to the host; Linux presents the port as /dev/hvc0. VIRTIO_CONSOLE_F_EMERG_WRITE is
// offered (a write to emerg_wr sends one byte without any queue). The host end is a
// ConsoleBackend (HostConsolePort for `lamina run --console-port`).
//
// The device takes a guest buffer only when it can finish it now: a receive buffer when host
// input is pending, a transmit buffer when the backend has output room (each transmit buffer
// is written out up to kMaxTransmitBytes; a longer one is truncated, which no driver does). So
// no descriptor chain is held between calls and there is nothing to save but a version.
// Work runs on the notifying vCPU thread or on the backend's thread (input arrived, output
// space freed).
//
// Ownership: borrows the backend (which outlives it) and, while active, the transport.
// Thread-safety: one mutex over the active state and both queues; the backend's listener
// calls take it too, and the backend never calls the listener with its own lock held.

#include <cstdint>
#include <mutex>

#include "base/log.h"
#include "virtio/console_backend.h"
#include "virtio/virtio_device.h"

namespace lamina::virtio {

inline constexpr uint64_t kConsoleFeatureSize = uint64_t{1} << 0;
inline constexpr uint64_t kConsoleFeatureMultiport = uint64_t{1} << 1;
inline constexpr uint64_t kConsoleFeatureEmergencyWrite = uint64_t{1} << 2;

class VirtioConsole final : public VirtioDevice, private ConsoleBackend::Listener {
 public:
  static constexpr uint16_t kReceiveQueue = 0;
  static constexpr uint16_t kTransmitQueue = 1;
  static constexpr uint32_t kMaxTransmitBytes = 64 * 1024;
  // struct virtio_console_config (5.3.4): cols, rows, max_nr_ports, emerg_wr.
  static constexpr uint32_t kConfigSize = 12;
  static constexpr uint32_t kEmergencyWriteOffset = 8;

  explicit VirtioConsole(ConsoleBackend& backend);
  ~VirtioConsole() override;

  std::string_view name() const override { return "virtio-console"; }
  DeviceType type() const override { return DeviceType::kConsole; }
  uint64_t device_features() const override { return kConsoleFeatureEmergencyWrite; }
  uint16_t queue_count() const override { return 2; }
  uint32_t config_size() const override { return kConfigSize; }
  void read_config(uint32_t offset, std::span<std::byte> data) override;
  void write_config(uint32_t offset, std::span<const std::byte> data) override;

  [[nodiscard]] Result<void> activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index) override;
  void reset() override;

  // Host input and output room wait in the backend while paused; resume_io() serves them.
  void pause_io() override;
  void resume_io() override;
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  void input_available() override;
  void output_space() override;
  void receive_locked();
  void transmit_locked();
  // Ends processing after a driver error (until reset()).
  void fail_locked(const Error& error);

  ConsoleBackend& backend_;
  mutable std::mutex mutex_;
  VirtioTransport* transport_ = nullptr;  // set while active
  bool io_paused_ = false;                // pause_io(): the backend's calls serve nothing
  bool broken_ = false;
};

}  // namespace lamina::virtio
