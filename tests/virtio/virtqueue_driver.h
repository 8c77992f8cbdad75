#pragma once
// TestDriver: the driver side of one split virtqueue, for tests: lays the rings out in guest
// RAM, makes chains available the way Linux's virtio_ring does, and reads the used ring back.
// It writes raw descriptors too, so tests can build the hostile chains a guest could.

#include <atomic>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "base/byte_order.h"
#include "base/guest_memory.h"
#include "virtio/virtqueue.h"

namespace lamina::virtio::testing {

struct TestBuffer {
  uint64_t address;
  uint32_t length;
  bool writable;
};

class TestDriver {
 public:
  // Rings at `base` (descriptors, then avail, then used on a 4-byte boundary); data buffers
  // are handed out from `data_base` upward.
  TestDriver(GuestMemory& memory, uint16_t size, uint64_t base, uint64_t data_base)
      : memory_(memory), data_next_(data_base) {
    layout_.size = size;
    layout_.descriptor_table = base;
    layout_.driver_area = base + 16ull * size;
    layout_.device_area = (layout_.driver_area + 6 + 2ull * size + 3) & ~uint64_t{3};
    const uint64_t end = layout_.device_area + 6 + 8ull * size;
    std::vector<std::byte> zeros(end - base);
    (void)memory_.write(base, zeros);
  }

  const VirtqueueLayout& layout() const { return layout_; }

  // A fresh data buffer of `length` bytes in guest RAM, filled with `fill`.
  uint64_t allocate(uint32_t length, std::byte fill = std::byte{0}) {
    const uint64_t address = data_next_;
    data_next_ = (data_next_ + length + 15) & ~uint64_t{15};
    std::vector<std::byte> bytes(length, fill);
    (void)memory_.write(address, bytes);
    return address;
  }

  // Writes descriptor `index` verbatim.
  void set_descriptor(uint64_t table, uint16_t index, uint64_t address, uint32_t length,
                      uint16_t flags, uint16_t next) {
    std::byte entry[16];
    store_le<uint64_t>(entry, address);
    store_le<uint32_t>(entry + 8, length);
    store_le<uint16_t>(entry + 12, flags);
    store_le<uint16_t>(entry + 14, next);
    (void)memory_.write(table + 16ull * index, entry);
  }

  // Links `buffers` into a direct chain from free descriptors and makes it available;
  // returns the head.
  uint16_t add_chain(const std::vector<TestBuffer>& buffers) {
    const uint16_t head = next_free_;
    for (size_t i = 0; i < buffers.size(); ++i) {
      const uint16_t index = static_cast<uint16_t>((head + i) % layout_.size);
      const bool last = i + 1 == buffers.size();
      set_descriptor(layout_.descriptor_table, index, buffers[i].address, buffers[i].length,
                     static_cast<uint16_t>((last ? 0 : 1) | (buffers[i].writable ? 2 : 0)),
                     static_cast<uint16_t>((index + 1) % layout_.size));
    }
    next_free_ = static_cast<uint16_t>((head + buffers.size()) % layout_.size);
    publish(head);
    return head;
  }

  // Puts `head` in the next avail slot and bumps avail idx.
  void publish(uint16_t head) {
    write_u16(layout_.driver_area + 4 + 2ull * (avail_index_ % layout_.size), head);
    ++avail_index_;
    store_release_u16(layout_.driver_area + 2, avail_index_);
  }
  void set_avail_index(uint16_t value) {
    avail_index_ = value;
    store_release_u16(layout_.driver_area + 2, value);
  }
  void set_avail_flags(uint16_t flags) { store_release_u16(layout_.driver_area, flags); }
  void set_used_event(uint16_t value) {
    store_release_u16(layout_.driver_area + 4 + 2ull * layout_.size, value);
  }

  // The device's ring fields, read as a driver must (virtio 1.2 section 2.7.13: a read of the
  // used index with acquire orders the reads of the elements and buffers it published).
  uint16_t used_index() const { return load_acquire_u16(layout_.device_area + 2); }
  uint16_t used_flags() const { return load_acquire_u16(layout_.device_area); }
  uint16_t avail_event() const {
    return load_acquire_u16(layout_.device_area + 4 + 8ull * layout_.size);
  }
  // (id, len) of used slot `slot`.
  std::pair<uint32_t, uint32_t> used_element(uint16_t slot) const {
    std::byte element[8];
    (void)memory_.read(layout_.device_area + 4 + 8ull * (slot % layout_.size), element);
    return {load_le<uint32_t>(element), load_le<uint32_t>(element + 4)};
  }

  std::vector<std::byte> read_bytes(uint64_t address, size_t length) const {
    std::vector<std::byte> bytes(length);
    (void)memory_.read(address, bytes);
    return bytes;
  }

 private:
  void write_u16(uint64_t address, uint16_t value) {
    std::byte bytes[2];
    store_le<uint16_t>(bytes, value);
    (void)memory_.write(address, bytes);
  }
  // Fields the device thread reads or writes while the driver runs: atomics, with the ordering
  // the virtio memory model asks of a driver (the device's side is in virtqueue.cc).
  void store_release_u16(uint64_t address, uint16_t value) {
    std::byte* host = memory_.host_pointer(address, 2);
    if (host == nullptr) return write_u16(address, value);  // outside RAM: a hostile test
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(host))
        .store(value, std::memory_order_release);
  }
  uint16_t load_acquire_u16(uint64_t address) const {
    std::byte* host = memory_.host_pointer(address, 2);
    if (host == nullptr) return read_u16(address);
    return std::atomic_ref<const uint16_t>(*reinterpret_cast<const uint16_t*>(host))
        .load(std::memory_order_acquire);
  }
  uint16_t read_u16(uint64_t address) const {
    std::byte bytes[2];
    (void)memory_.read(address, bytes);
    return load_le<uint16_t>(bytes);
  }

  GuestMemory& memory_;
  VirtqueueLayout layout_;
  uint64_t data_next_;
  uint16_t next_free_ = 0;
  uint16_t avail_index_ = 0;
};

}  // namespace lamina::virtio::testing
