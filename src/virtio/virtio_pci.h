#pragma once
// VirtioPciFunction: one virtio device presented as a PCI function through the virtio 1.x
// "modern" transport (virtio 1.2 section 4.1): identity 1AF4:1040+type, the vendor-specific
// capabilities (common configuration, notifications, ISR, device configuration, PCI
// configuration access) pointing into one 64-bit memory BAR, MSI-X in a BAR of its own (one
// vector for configuration changes plus one per queue), INTx with the ISR's read-to-clear
// semantics when MSI-X is off, the device status state machine, feature negotiation, queue
// configuration creating the Virtqueues, notifications, device reset and save/load. The device
// model behind it (VirtioDevice) sees only virtio_device.h.
//
// Guest input is untrusted: any access of any width at any offset is answered or ignored (and
// counted in ignored_accesses()); a protocol violation the device can detect (a bad queue
// layout, FEATURES_OK missing at DRIVER_OK, a failed activation) is a device_error():
// DEVICE_NEEDS_RESET, a configuration interrupt and a rate-limited log line.
//
// Ownership: owns the VirtioDevice; borrows the DmaMemory and the MSI sink, which outlive it.
// Thread-safety: register accesses come from any vCPU thread, VirtioTransport calls from the
// device's threads. A reader-writer "control" lock orders the lifecycle: status and queue
// configuration writes, resets and save/load hold it exclusively (and call the device's
// activate()/reset() under it); notifications hold it shared while calling queue_notify(). A
// plain "state" lock guards the registers and the ISR and is never held while calling the
// device, so a device may signal or report errors from any thread, including from inside
// activate() or queue_notify(). Lock order: control, then state, then the PciDevice's own lock.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <vector>

#include "base/log.h"
#include "hw/apic_bus.h"
#include "hw/device.h"
#include "hw/msix.h"
#include "hw/pci_device.h"
#include "virtio/dma_memory.h"
#include "virtio/virtio_device.h"
#include "virtio/virtqueue.h"

namespace lamina::virtio {

class VirtioPciFunction final : public hw::PciDevice, public VirtioTransport {
 public:
  VirtioPciFunction(std::unique_ptr<VirtioDevice> device, const DmaMemory& memory,
                    hw::MsiSink& msi_sink);
  // Resets the device first, so its threads stop before anything they use goes away.
  ~VirtioPciFunction() override;

  VirtioDevice& device() { return *device_; }
  // Size of the register BAR (kRegisterBar) and the MSI-X BAR (kMsixBar).
  uint64_t register_bar_size() const { return register_bar_size_; }
  uint64_t msix_bar_size() const { return msix_bar_size_; }

  // Device reset as a driver's status write of 0 does it (also used for machine reset).
  void reset();

  // VirtioTransport.
  const DmaMemory& memory() const override { return memory_; }
  Virtqueue* queue(uint16_t index) override;
  void signal_queue(uint16_t index) override;
  void signal_config_change() override;
  void device_error(std::string_view what) override;

  // The PCI function's config space and MSI-X table, the transport's registers and queues,
  // then the device; load() re-creates the queues and re-activates a running device.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

  // Diagnostics and tests.
  uint8_t device_status() const;
  uint8_t isr_status() const;  // without clearing it
  uint64_t ignored_accesses() const { return ignored_.load(std::memory_order_relaxed); }

 protected:
  void config_written(uint16_t offset, unsigned size) override;
  std::optional<uint32_t> config_read_hook(uint16_t offset, unsigned size) const override;

 private:
  // The register BAR's Device: forwards to the function.
  class RegisterBar final : public hw::Device {
   public:
    explicit RegisterBar(VirtioPciFunction& owner) : owner_(owner) {}
    std::string_view name() const override { return "virtio-pci registers"; }
    void read(uint64_t offset, std::span<std::byte> data) override;
    void write(uint64_t offset, std::span<const std::byte> data) override;

   private:
    VirtioPciFunction& owner_;
  };

  struct QueueConfig {
    uint16_t max_size = 0;  // the device's limit, a power of two
    uint16_t size = 0;      // reads back the maximum after reset (4.1.4.3)
    uint16_t msix_vector = 0;
    bool enabled = false;
    uint64_t descriptor_table = 0;
    uint64_t driver_area = 0;
    uint64_t device_area = 0;
    std::optional<Virtqueue> ring;  // exists while enabled
    bool kicked_early = false;      // notified before DRIVER_OK: replayed after activation
  };

  // What a common configuration write asks of the lifecycle, done after the state lock drops.
  struct Action {
    enum Kind { kNone, kReset, kActivate, kEnableQueue, kError } kind = kNone;
    uint16_t queue = 0;
    std::string_view error;
  };

  void add_capabilities();
  void ignore() { ignored_.fetch_add(1, std::memory_order_relaxed); }

  // virtio_pci_registers.cc: the register BAR.
  void register_read(uint64_t offset, std::span<std::byte> data);
  void register_write(uint64_t offset, std::span<const std::byte> data);
  uint64_t common_field_value(uint16_t field) const;  // state lock held
  void common_read(uint64_t offset, std::span<std::byte> data);
  void common_write(uint64_t offset, std::span<const std::byte> data);
  Action write_status(uint8_t value);         // state lock held
  Action write_queue_enable(uint16_t value);  // state lock held
  uint8_t read_isr();
  void notify(uint64_t offset, size_t size);
  // The PCI configuration access window's target, when the driver set a valid one.
  struct WindowTarget {
    hw::Device* region;
    uint32_t offset;
    uint32_t length;
  };
  std::optional<WindowTarget> pci_config_window();
  void pci_config_window_write();

  // virtio_pci.cc: the lifecycle.
  void reset_locked();  // control lock held exclusively
  void activate_locked();
  void enable_queue_locked(uint16_t index);
  void raise_config_interrupt();
  void update_intx_locked();  // state lock held

  const DmaMemory& memory_;
  const uint16_t queue_count_;
  const uint64_t offered_features_;  // the device's bits plus the transport's
  const uint32_t config_size_;
  const uint64_t register_bar_size_;
  const uint64_t msix_bar_size_;
  RegisterBar register_bar_{*this};
  hw::MsixCapability msix_;
  uint8_t pci_config_capability_ = 0;  // offset of the PCI configuration access capability
  RateLimiter log_limiter_;
  std::atomic<uint64_t> ignored_{0};

  mutable std::shared_mutex control_mutex_;
  mutable std::mutex state_mutex_;
  uint8_t status_ = 0;
  bool activated_ = false;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint16_t config_vector_ = 0;
  uint16_t queue_select_ = 0;
  uint8_t config_generation_ = 0;
  uint8_t isr_ = 0;
  std::vector<QueueConfig> queues_;

  // Declared last so it is destroyed first: a device's threads end before the rest goes.
  std::unique_ptr<VirtioDevice> device_;
};

}  // namespace lamina::virtio
