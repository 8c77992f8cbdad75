#pragma once
// VirtioMem: the virtio memory device (virtio 1.2 section 5.15, device type 24). It owns a
// region of guest-physical address space above RAM (backed by the machine's GuestMemory, but
// absent from the e820 map) cut into blocks; the host sets how much of it the guest should use
// (requested_size, a configuration change), and the guest's driver plugs and unplugs blocks
// with requests on its one queue until plugged_size matches. Unplugged blocks are given back
// to the host (the `discard` callback: madvise(MADV_DONTNEED) on their host pages), so the
// worker's memory falls when the guest returns memory. The device offers no feature bits:
// without VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE a guest may read unplugged memory (zeros), which
// the spec allows on x86.
//
// Requests (5.15.6): PLUG and UNPLUG of nb_blocks from a block-aligned address inside the
// usable region (ERROR when not aligned, outside, or not all in the other state; NACK for a
// plug past requested_size), UNPLUG_ALL, STATE (PLUGGED, UNPLUGGED or MIXED). A malformed
// chain completes with ERROR when it has room for a response, else breaks the device.
//
// Ownership: borrows nothing; the discard callback must stay valid while it lives.
// Thread-safety: one mutex; requests run on the notifying vCPU thread, set_requested_size()
// from a host thread.

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "virtio/virtio_device.h"

namespace lamina::virtio {

class VirtioMem final : public VirtioDevice {
 public:
  static constexpr uint64_t kBlockSize = uint64_t{2} << 20;
  static constexpr uint32_t kConfigSize = 56;
  // Request and response types (5.15.6).
  static constexpr uint16_t kPlug = 0, kUnplug = 1, kUnplugAll = 2, kState = 3;
  static constexpr uint16_t kAck = 0, kNack = 1, kBusy = 2, kError = 3;
  static constexpr uint16_t kPlugged = 0, kUnplugged = 1, kMixed = 2;

  using Discard = std::function<void(uint64_t guest_physical, uint64_t size)>;
  // `base` and `size`: the region (block-aligned); `discard` gives unplugged memory back.
  VirtioMem(uint64_t base, uint64_t size, Discard discard);

  std::string_view name() const override { return "virtio-mem"; }
  DeviceType type() const override { return DeviceType::kMemory; }
  uint64_t device_features() const override { return 0; }
  uint16_t queue_count() const override { return 1; }
  uint32_t config_size() const override { return kConfigSize; }
  void read_config(uint32_t offset, std::span<std::byte> data) override;

  [[nodiscard]] Result<void> activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index) override;
  void reset() override;

  // The host's target for the guest (a multiple of kBlockSize up to the region's size); the
  // driver is told by a configuration change interrupt. kInvalidArgument when it does not fit.
  [[nodiscard]] Result<void> set_requested_size(uint64_t bytes);
  uint64_t requested_size() const;
  uint64_t plugged_size() const;
  uint64_t region_base() const { return base_; }
  uint64_t region_size() const { return size_; }

  // Plugged blocks and the requested size; the queue is the transport's.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  struct Response {
    uint16_t type;
    uint16_t state = 0;
  };
  Response handle(std::span<const std::byte> request);  // mutex_ held
  Response plug(uint64_t address, uint64_t blocks, bool plug);
  Response state_of(uint64_t address, uint64_t blocks) const;
  void serve_locked();

  const uint64_t base_;
  const uint64_t size_;
  Discard discard_;

  mutable std::mutex mutex_;
  VirtioTransport* transport_ = nullptr;  // set while active
  bool broken_ = false;
  uint64_t requested_ = 0;
  uint64_t plugged_blocks_ = 0;
  std::vector<bool> plugged_;  // one per block
};

}  // namespace lamina::virtio
