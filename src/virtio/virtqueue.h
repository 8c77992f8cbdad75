#pragma once
// Virtqueue: the device side of one split virtqueue (virtio 1.2 section 2.7): walks descriptor
// chains the driver made available (direct and indirect), returns them through the used ring,
// and implements notification suppression both ways (flags, and VIRTIO_F_RING_EVENT_IDX).
//
// Everything in the rings is written by the guest and untrusted. pop() checks every index,
// address and length before use; a chain that loops, leaves guest RAM, is longer than the queue,
// nests indirect tables, puts a readable buffer after a writable one or overflows the length
// totals is a driver error: pop() returns kGuestFatal naming the problem, and the device then
// reports it (VirtioTransport::device_error → DEVICE_NEEDS_RESET). pop() never loops more than
// queue-size (or indirect-table-size) steps, so a hostile ring cannot hang the device.
//
// Ownership: borrows DmaMemory. Thread-safety: one thread at a time (the device's I/O thread or
// the vCPU thread that notified); the transport only creates, saves and drops queues while the
// device is quiescent.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"
#include "base/state_stream.h"
#include "virtio/dma_memory.h"

namespace lamina::virtio {

// One guest buffer of a descriptor chain, in guest-physical terms; lies wholly in RAM.
struct GuestBuffer {
  uint64_t address = 0;
  uint32_t length = 0;
};

// A chain the driver made available: driver-to-device buffers first, then device-to-driver
// buffers, in chain order.
struct DescriptorChain {
  uint16_t head = 0;
  std::vector<GuestBuffer> readable;
  std::vector<GuestBuffer> writable;
  uint64_t readable_length = 0;  // sum of readable lengths (checked, <= 4 GiB * queue size)
  uint64_t writable_length = 0;
};

struct VirtqueueLayout {
  uint16_t size = 0;            // power of two, 1..32768 (section 2.7)
  uint64_t descriptor_table = 0;  // 16-byte aligned, 16 * size bytes
  uint64_t driver_area = 0;       // available ring: 2-byte aligned, 6 + 2 * size bytes
  uint64_t device_area = 0;       // used ring: 4-byte aligned, 6 + 8 * size bytes
};

class Virtqueue {
 public:
  static constexpr uint16_t kMaxSize = 32768;

  // Checks size and alignment, and that all three areas lie in guest RAM (kGuestFatal names
  // the bad field otherwise). event_index: VIRTIO_F_RING_EVENT_IDX was negotiated;
  // indirect: VIRTIO_F_INDIRECT_DESC was negotiated.
  static Result<Virtqueue> create(const DmaMemory& memory, const VirtqueueLayout& layout,
                                  bool event_index, bool indirect);

  const VirtqueueLayout& layout() const { return layout_; }

  // The next available chain, std::nullopt when the driver has made none available since the
  // last pop(), or kGuestFatal when the driver broke the ring's rules.
  [[nodiscard]] Result<std::optional<DescriptorChain>> pop();

  // Returns chain `head` to the driver, having written `written` bytes into its writable
  // buffers (the used ring's len). Fails only when the used ring left RAM (kGuestFatal).
  [[nodiscard]] Result<void> push(uint16_t head, uint32_t written);

  // After one or more push()es: whether the driver asked to be interrupted now (the avail
  // ring's NO_INTERRUPT flag, or used_event with EVENT_IDX, section 2.7.10). Resets the
  // "since last signal" point, so call it once per batch and raise the interrupt when true.
  [[nodiscard]] bool should_signal();

  // Asks the driver to notify (kick) or not when it adds buffers: the used ring's NO_NOTIFY
  // flag, or avail_event with EVENT_IDX. A device that polls while busy disables and, before
  // sleeping, re-enables and then checks has_available() once more to close the race.
  void set_notifications(bool enabled);
  bool has_available() const;

  // Copies between host memory and a chain's buffers as if they were one contiguous byte
  // stream, starting `offset` bytes in. Return the bytes copied (short at the chain's end).
  // copy_to reports the written range to DmaMemory.
  size_t copy_from(const DescriptorChain& chain, uint64_t offset, std::span<std::byte> out) const;
  size_t copy_to(const DescriptorChain& chain, uint64_t offset, std::span<const std::byte> in) const;

  // Ring positions (last_avail_idx, used_idx and the signalling point) for checkpoints; the
  // layout and features are saved by the transport, which re-creates the queue before load.
  // Un-pops the last `count` chains popped and not pushed (a device pausing for a checkpoint
  // gives back buffers it took but cannot fill now): the next pop() returns them again. The
  // caller guarantees they are the most recent pops, in order, and not used yet.
  void give_back(uint16_t count) { last_avail_ = static_cast<uint16_t>(last_avail_ - count); }
  void save(StateWriter& writer) const;
  [[nodiscard]] Result<void> load(StateReader& reader);

 private:
  Virtqueue(const DmaMemory& memory, const VirtqueueLayout& layout, bool event_index,
            bool indirect);

  struct Descriptor {
    uint64_t address;
    uint32_t length;
    uint16_t flags;
    uint16_t next;
  };
  uint16_t read_avail_index() const;
  // table holds at least index + 1 descriptors (checked by the caller).
  static Descriptor read_descriptor(const std::byte* table, uint32_t index);
  Result<void> append_buffer(DescriptorChain& chain, const Descriptor& descriptor) const;
  // steps counts descriptors of the chain so far, across the table (bounded by the queue size).
  Result<void> walk_indirect(DescriptorChain& chain, const Descriptor& descriptor,
                             uint32_t& steps) const;
  void publish_avail_event(uint16_t value);

  const DmaMemory* memory_;
  VirtqueueLayout layout_;
  bool event_index_ = false;
  bool indirect_ = false;
  // Host views of the rings, checked at create(); guest RAM never moves.
  std::byte* descriptors_ = nullptr;
  std::byte* avail_ = nullptr;
  std::byte* used_ = nullptr;
  uint16_t last_avail_ = 0;  // next avail ring slot to consume
  uint16_t used_index_ = 0;  // next used ring slot to fill
  uint16_t signalled_used_ = 0;  // used_index_ when the driver was last signalled
  bool signalled_valid_ = false;
  bool notifications_enabled_ = true;
};

}  // namespace lamina::virtio
