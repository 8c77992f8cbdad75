#pragma once
// DmaMemory: guest RAM as a device sees it (virtio queues, fw_cfg DMA). Every guest-supplied address is checked against RAM
// before a host pointer is formed, and every write is reported to the accelerator so vCPUs drop
// translations of code the device overwrote (Accelerator::guest_memory_written), and to the
// memory's dirty log (live migration).
//
// Ownership: borrows the GuestMemory; the report callback is set once by the machine. Thread-
// safety: all members may be called from any thread (guest RAM is shared like real RAM; the
// callback must be thread-safe, as Accelerator::guest_memory_written is).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>

#include "base/error.h"
#include "base/guest_memory.h"

namespace lamina {

class DmaMemory {
 public:
  using WriteObserver = std::function<void(uint64_t guest_physical, uint64_t length)>;

  explicit DmaMemory(GuestMemory& memory, WriteObserver observer = {})
      : memory_(memory), observer_(std::move(observer)) {}

  // Host view of [guest_physical, +length) for reading, or an empty span when any byte lies
  // outside one RAM region. length 0 gives an empty span.
  std::span<const std::byte> map_for_read(uint64_t guest_physical, uint64_t length) const {
    const std::byte* host = memory_.host_pointer(guest_physical, length);
    return host ? std::span<const std::byte>(host, length) : std::span<const std::byte>();
  }

  // Host view for a device to write into; after writing, the device calls written() for the
  // same range (reporting after the bytes land, so a vCPU cannot re-translate stale code).
  std::span<std::byte> map_for_write(uint64_t guest_physical, uint64_t length) const {
    std::byte* host = memory_.host_pointer(guest_physical, length);
    return host ? std::span<std::byte>(host, length) : std::span<std::byte>();
  }
  void written(uint64_t guest_physical, uint64_t length) const {
    memory_.note_written(guest_physical, length);
    if (observer_ && length != 0) observer_(guest_physical, length);
  }

  // Checked copies; kInvalidArgument names the range when any byte is outside RAM.
  [[nodiscard]] Result<void> read(uint64_t guest_physical, std::span<std::byte> data) const {
    return memory_.read(guest_physical, data);
  }
  [[nodiscard]] Result<void> write(uint64_t guest_physical, std::span<const std::byte> data) const {
    if (auto done = memory_.write(guest_physical, data); !done) return done;
    written(guest_physical, data.size());
    return {};
  }

  GuestMemory& guest_memory() const { return memory_; }

 private:
  GuestMemory& memory_;
  WriteObserver observer_;
};

}  // namespace lamina
