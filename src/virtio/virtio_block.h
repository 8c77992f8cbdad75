#pragma once
// VirtioBlock: the virtio block device (virtio 1.2 section 5.2) on a storage::BlockDevice, so
// any image format Lamina opens becomes a guest disk. One request queue, served by the
// device's own I/O thread: queue_notify() only wakes that thread (an eventfd); the thread pops
// chains with the driver's kicks suppressed while it works, executes them through
// BlockRequestHandler (virtio_block_request.h) and interrupts once per batch.
//
// Offers SEG_MAX, BLK_SIZE (512), FLUSH (BlockDevice::flush, fdatasync for the file formats),
// RO for a read-only disk, and DISCARD and WRITE_ZEROES for a writable one (every writable
// format implements discard; BlockDevice::write_zeroes frees space where it can). GET_ID
// answers the serial given at creation.
//
// Ownership: shares the BlockDevice (a `lamina run` keeps the image open across the Machines of
// a --on-reboot restart; one device uses it at a time), owns the I/O thread, borrows the
// transport between activate() and reset(). Thread-safety: as VirtioDevice says: read_config/queue_notify from
// vCPU threads, activate/reset/save/load serialized by the caller (an internal mutex also
// serializes them); the BlockDevice is touched only by the I/O thread (and by save/load while
// that thread is stopped or idle).

#include <array>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>

#include "base/error.h"
#include "base/wakeup_event.h"
#include "storage/block_device.h"
#include "virtio/virtio_block_request.h"
#include "virtio/virtio_device.h"

namespace lamina::virtio {

// Checks a serial for GET_ID: printable ASCII, at most 20 bytes (section 5.2.6).
[[nodiscard]] Result<void> check_block_serial(std::string_view serial);
// A stable 20-character serial for an image nobody named: "lamina-" and 13 hex digits of a
// hash of the image's canonical path, so the same file keeps its /dev/disk/by-id name.
std::string derive_block_serial(const std::string& image_path);

class VirtioBlock final : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint32_t kConfigSize = 60;  // through write_zeroes_may_unmap and unused1

  // The disk is read-only for the guest exactly when disk->read_only(). Fails on a bad serial
  // or when no eventfd can be made.
  static Result<std::unique_ptr<VirtioBlock>> create(std::shared_ptr<storage::BlockDevice> disk,
                                                     std::string serial);
  ~VirtioBlock() override;
  VirtioBlock(const VirtioBlock&) = delete;
  VirtioBlock& operator=(const VirtioBlock&) = delete;

  std::string_view name() const override { return "virtio-blk"; }
  DeviceType type() const override { return DeviceType::kBlock; }
  uint64_t device_features() const override;
  uint16_t queue_count() const override { return 1; }
  uint16_t queue_max_size(uint16_t /*index*/) const override { return kQueueSize; }
  uint32_t config_size() const override { return kConfigSize; }
  void read_config(uint32_t offset, std::span<std::byte> data) override;

  [[nodiscard]] Result<void> activate(VirtioTransport& transport, uint64_t features) override;
  void queue_notify(uint16_t index) override;
  void reset() override;

  // Section "virtio-blk" v1: the disk's capacity and read-only flag, so a checkpoint cannot be
  // restored onto a different disk; the queue itself is the transport's. save() first waits
  // for the I/O thread to finish what was kicked.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

  // Returns once the I/O thread has completed every request kicked so far (or is stopped).
  void wait_idle() const;
  // With the vCPUs held no new kick arrives, so once idle the thread stays asleep: pausing is
  // waiting for the requests in flight to complete (their data is in the image, their used
  // entries in the ring).
  void pause_io() override { wait_idle(); }

  uint64_t capacity_sectors() const { return handler_.capacity_sectors(); }
  // Guest I/O completed so far; from any thread.
  BlockRequestHandler::Traffic traffic() const { return handler_.traffic(); }
  bool read_only() const { return read_only_; }
  const std::string& serial() const { return serial_; }

 private:
  VirtioBlock(std::shared_ptr<storage::BlockDevice> disk, std::string serial,
              WakeupEvent wakeup);
  static BlockRequestHandler::Id make_id(std::string_view serial);
  void build_config();
  void run(std::stop_token stop);
  // Serves the queue until it is empty (or a stop is asked); false when the driver broke the
  // protocol and the transport was told (the thread then serves nothing until reset).
  bool drain(Virtqueue& queue, const std::stop_token& stop);
  bool fatal(std::string_view what);
  void stop_worker();

  std::shared_ptr<storage::BlockDevice> disk_;
  std::string serial_;
  bool read_only_;
  BlockRequestHandler handler_;
  std::array<std::byte, kConfigSize> config_{};
  WakeupEvent wakeup_;

  std::mutex control_mutex_;  // serializes activate/reset/load/destruction
  VirtioTransport* transport_ = nullptr;  // set while active; read by the I/O thread

  mutable std::mutex state_mutex_;
  mutable std::condition_variable idle_;
  bool running_ = false;  // the I/O thread exists
  bool pending_ = false;  // a kick the I/O thread has not started on
  bool busy_ = false;     // the I/O thread is serving the queue

  std::jthread worker_;
};

}  // namespace lamina::virtio
