#pragma once
// The contract between a virtio device model (blk, net, console, rng) and the transport that
// presents it to the guest (virtio-pci modern, virtio 1.2 section 4.1). The transport owns
// everything generic: the status state machine, feature negotiation, queue configuration and
// the Virtqueue objects, MSI-X/INTx and the ISR, device reset. A device owns only its type,
// its feature bits, its configuration space and what it does with buffers.
//
// Lifecycle, driven by the transport:
//   (construction) → activate(transport, features) on DRIVER_OK → queue_notify()* →
//   reset() on a driver reset (status 0) or machine reset → activate() again ...
//
// Threading: read_config/write_config/queue_notify are called on the vCPU thread that made the
// access; a device with an I/O thread hands the work over (an eventfd) and returns. reset() is
// called on a vCPU thread or the machine thread and must return only when the device no longer
// touches any queue or guest memory. save()/load() run while the machine is stopped: the
// transport saves its own state and the queues, then the device's; on load it restores those,
// calls the device's load() and, if the driver had set DRIVER_OK, activate() with the saved
// features (so a device saves only what activate() cannot rebuild).

#include <cstdint>
#include <span>
#include <string_view>

#include "base/error.h"
#include "hw/stateful.h"
#include "virtio/dma_memory.h"
#include "virtio/virtqueue.h"

namespace lamina::virtio {

// Device types (section 5).
enum class DeviceType : uint16_t {
  kNet = 1,
  kBlock = 2,
  kConsole = 3,
  kEntropy = 4,
  kInput = 18,
  kMemory = 24,
};

// Reserved feature bits the transport negotiates itself (section 6).
inline constexpr uint64_t kFeatureIndirectDescriptors = uint64_t{1} << 28;
inline constexpr uint64_t kFeatureRingEventIndex = uint64_t{1} << 29;
inline constexpr uint64_t kFeatureVersion1 = uint64_t{1} << 32;

// What the transport gives an active device.
class VirtioTransport {
 public:
  virtual ~VirtioTransport() = default;
  virtual const DmaMemory& memory() const = 0;
  // The queue the driver enabled at `index`, or nullptr (not enabled, or index out of range).
  // Valid from activate() until reset() returns.
  virtual Virtqueue* queue(uint16_t index) = 0;
  // Interrupts the driver for used buffers on `index` (MSI-X vector or INTx + ISR bit 0).
  // Call when Virtqueue::should_signal() said so. Thread-safe.
  virtual void signal_queue(uint16_t index) = 0;
  // The device configuration changed (ISR bit 1 / config vector). Thread-safe.
  virtual void signal_config_change() = 0;
  // The driver broke the protocol (a bad ring, a malformed request that cannot be completed):
  // logs `what` rate-limited, sets DEVICE_NEEDS_RESET and signals a config change; the device
  // must stop processing queues until reset(). Thread-safe.
  virtual void device_error(std::string_view what) = 0;
};

class VirtioDevice : public hw::Stateful {
 public:
  ~VirtioDevice() override = default;

  virtual std::string_view name() const = 0;  // "virtio-blk", for logs
  virtual DeviceType type() const = 0;
  // Device-specific feature bits offered (bits 0–23 and 50+; the transport adds 28, 29, 32).
  virtual uint64_t device_features() const = 0;
  virtual uint16_t queue_count() const = 0;
  // Largest size the driver may choose for a queue (a power of two <= Virtqueue::kMaxSize).
  virtual uint16_t queue_max_size(uint16_t /*index*/) const { return 256; }

  // Device configuration space (section 4.1.4.6), little-endian; the transport checks that
  // offset + data.size() <= config_size() before calling.
  virtual uint32_t config_size() const = 0;
  virtual void read_config(uint32_t offset, std::span<std::byte> data) = 0;
  virtual void write_config(uint32_t /*offset*/, std::span<const std::byte> /*data*/) {}

  // DRIVER_OK: `features` is what the driver accepted (a subset of what was offered, always
  // with kFeatureVersion1). An error makes the transport set DEVICE_NEEDS_RESET.
  [[nodiscard]] virtual Result<void> activate(VirtioTransport& transport, uint64_t features) = 0;
  // The driver kicked queue `index` (only after activate()).
  virtual void queue_notify(uint16_t index) = 0;
  // Back to the state after construction; see the threading rule above.
  virtual void reset() = 0;

  // Machine quiesce (checkpoints, migration), called with every vCPU held: returns once the
  // device's own threads no longer touch its queues or guest RAM, and keeps them so until
  // resume_io(). Requests in flight are completed or kept (a device that held buffers it
  // cannot finish now gives them back to the queue), so save() sees a consistent ring.
  // The default suits a device whose work runs only on the notifying vCPU thread.
  virtual void pause_io() {}
  virtual void resume_io() {}
};

}  // namespace lamina::virtio
