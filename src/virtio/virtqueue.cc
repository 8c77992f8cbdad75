#include "virtio/virtqueue.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>

#include "base/byte_order.h"

namespace lamina::virtio {
namespace {

// Section 2.7.5: descriptor flags.
constexpr uint16_t kDescriptorNext = 1;
constexpr uint16_t kDescriptorWrite = 2;
constexpr uint16_t kDescriptorIndirect = 4;
// Section 2.7.6 / 2.7.8: ring flags.
constexpr uint16_t kAvailNoInterrupt = 1;
constexpr uint16_t kUsedNoNotify = 1;

constexpr uint64_t kDescriptorSize = 16;
constexpr uint64_t kUsedElementSize = 8;
constexpr uint32_t kStateVersion = 1;

uint64_t descriptor_table_bytes(uint16_t size) { return kDescriptorSize * size; }
uint64_t avail_ring_bytes(uint16_t size) { return 6 + 2 * uint64_t{size}; }
uint64_t used_ring_bytes(uint16_t size) { return 6 + kUsedElementSize * size; }

// Ring indices are shared with the driver running on other host threads (vCPUs): the device
// reads the driver's idx with acquire and publishes its own with release (section 2.7.13.3).
uint16_t load_acquire_u16(const std::byte* where) {
  return std::atomic_ref<const uint16_t>(*reinterpret_cast<const uint16_t*>(where))
      .load(std::memory_order_acquire);
}
void store_release_u16(std::byte* where, uint16_t value) {
  std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(where))
      .store(value, std::memory_order_release);
}

std::unexpected<Error> driver_error(std::string message) {
  return fail(ErrorCode::kGuestFatal, "virtqueue: " + std::move(message));
}

}  // namespace

Virtqueue::Virtqueue(const DmaMemory& memory, const VirtqueueLayout& layout, bool event_index,
                     bool indirect)
    : memory_(&memory), layout_(layout), event_index_(event_index), indirect_(indirect) {}

Result<Virtqueue> Virtqueue::create(const DmaMemory& memory, const VirtqueueLayout& layout,
                                    bool event_index, bool indirect) {
  const uint16_t size = layout.size;
  if (size == 0 || size > kMaxSize || !std::has_single_bit(size)) {
    return driver_error(fmt::format("queue size {} is not a power of two up to {}", size, kMaxSize));
  }
  // Section 2.7: alignment of the three areas (16, 2 and 4 bytes).
  if (layout.descriptor_table % 16 != 0 || layout.driver_area % 2 != 0 ||
      layout.device_area % 4 != 0) {
    return driver_error(fmt::format(
        "misaligned rings (descriptors {:#x}, driver area {:#x}, device area {:#x})",
        layout.descriptor_table, layout.driver_area, layout.device_area));
  }
  Virtqueue queue(memory, layout, event_index, indirect);
  queue.descriptors_ = memory.map_for_write(layout.descriptor_table, descriptor_table_bytes(size)).data();
  queue.avail_ = memory.map_for_write(layout.driver_area, avail_ring_bytes(size)).data();
  queue.used_ = memory.map_for_write(layout.device_area, used_ring_bytes(size)).data();
  if (!queue.descriptors_ || !queue.avail_ || !queue.used_) {
    return driver_error(fmt::format(
        "rings outside guest RAM (size {}, descriptors {:#x}, driver area {:#x}, device area {:#x})",
        size, layout.descriptor_table, layout.driver_area, layout.device_area));
  }
  // The rings are not touched here: the driver zeroed them, and a queue re-created on load
  // must leave the restored guest memory as it was.
  return queue;
}

uint16_t Virtqueue::read_avail_index() const { return load_acquire_u16(avail_ + 2); }

bool Virtqueue::has_available() const { return read_avail_index() != last_avail_; }

Virtqueue::Descriptor Virtqueue::read_descriptor(const std::byte* table, uint32_t index) {
  const std::byte* entry = table + kDescriptorSize * index;
  return Descriptor{load_le<uint64_t>(entry), load_le<uint32_t>(entry + 8),
                    load_le<uint16_t>(entry + 12), load_le<uint16_t>(entry + 14)};
}

Result<void> Virtqueue::append_buffer(DescriptorChain& chain, const Descriptor& descriptor) const {
  if (descriptor.length == 0) return {};  // carries nothing; tolerated as Linux never sends it
  if (!memory_->guest_memory().contains(descriptor.address, descriptor.length)) {
    return driver_error(fmt::format("buffer {:#x}+{:#x} of chain {} is outside guest RAM",
                                    descriptor.address, descriptor.length, chain.head));
  }
  if (descriptor.flags & kDescriptorWrite) {
    chain.writable.push_back({descriptor.address, descriptor.length});
    chain.writable_length += descriptor.length;
    return {};
  }
  // Section 2.7.4.2: device-readable descriptors come before device-writable ones.
  if (!chain.writable.empty()) {
    return driver_error(fmt::format("chain {} has a readable buffer after a writable one", chain.head));
  }
  chain.readable.push_back({descriptor.address, descriptor.length});
  chain.readable_length += descriptor.length;
  return {};
}

Result<void> Virtqueue::walk_indirect(DescriptorChain& chain, const Descriptor& descriptor,
                                      uint32_t& steps) const {
  if (!indirect_) {
    return driver_error(fmt::format("chain {} uses an indirect table without the feature", chain.head));
  }
  // Section 2.7.5.3.1: an indirect descriptor carries no NEXT, and its table holds whole
  // descriptors.
  if (descriptor.flags & kDescriptorNext) {
    return driver_error(fmt::format("chain {} sets both INDIRECT and NEXT", chain.head));
  }
  if (descriptor.length == 0 || descriptor.length % kDescriptorSize != 0) {
    return driver_error(fmt::format("chain {} has an indirect table of {} bytes", chain.head,
                                    descriptor.length));
  }
  const uint32_t entries = static_cast<uint32_t>(descriptor.length / kDescriptorSize);
  const std::span<const std::byte> table = memory_->map_for_read(descriptor.address, descriptor.length);
  if (table.empty()) {
    return driver_error(fmt::format("indirect table {:#x}+{:#x} of chain {} is outside guest RAM",
                                    descriptor.address, descriptor.length, chain.head));
  }
  uint32_t index = 0;
  for (;;) {
    // A chain is never longer than the queue (2.7.5.3.1), which also ends loops in the table.
    if (++steps > layout_.size) {
      return driver_error(fmt::format("chain {} is longer than the queue (a loop?)", chain.head));
    }
    const Descriptor entry = read_descriptor(table.data(), index);
    if (entry.flags & kDescriptorIndirect) {
      return driver_error(fmt::format("chain {} nests an indirect table", chain.head));
    }
    if (auto appended = append_buffer(chain, entry); !appended) return appended;
    if (!(entry.flags & kDescriptorNext)) return {};
    if (entry.next >= entries) {
      return driver_error(fmt::format("chain {} links to entry {} of a {}-entry indirect table",
                                      chain.head, entry.next, entries));
    }
    index = entry.next;
  }
}

Result<std::optional<DescriptorChain>> Virtqueue::pop() {
  const uint16_t size = layout_.size;
  const uint16_t avail_index = read_avail_index();
  const uint16_t pending = static_cast<uint16_t>(avail_index - last_avail_);
  if (pending == 0) return std::optional<DescriptorChain>();
  if (pending > size) {
    return driver_error(fmt::format("available index {} is {} ahead of the device's {}, more than "
                                    "the queue size {}", avail_index, pending, last_avail_, size));
  }
  DescriptorChain chain;
  chain.head = load_le<uint16_t>(avail_ + 4 + 2 * uint64_t{static_cast<uint16_t>(last_avail_ % size)});
  if (chain.head >= size) {
    return driver_error(fmt::format("available ring names descriptor {} of a {}-entry queue",
                                    chain.head, size));
  }
  uint32_t steps = 0;
  uint16_t index = chain.head;
  for (;;) {
    if (++steps > size) {
      return driver_error(fmt::format("chain {} is longer than the queue (a loop?)", chain.head));
    }
    const Descriptor descriptor = read_descriptor(descriptors_, index);
    if (descriptor.flags & kDescriptorIndirect) {
      // The descriptor naming the table carries no buffer; Linux fills a table with up to
      // queue-size entries of its own (virtio-blk: header, seg_max segments, status).
      --steps;
      if (auto walked = walk_indirect(chain, descriptor, steps); !walked) return fail(walked.error());
      break;
    }
    if (auto appended = append_buffer(chain, descriptor); !appended) return fail(appended.error());
    if (!(descriptor.flags & kDescriptorNext)) break;
    if (descriptor.next >= size) {
      return driver_error(fmt::format("chain {} links to descriptor {} of a {}-entry queue",
                                      chain.head, descriptor.next, size));
    }
    index = descriptor.next;
  }
  ++last_avail_;
  // Section 2.7.10: with EVENT_IDX the device asks to be kicked for the next new buffer.
  if (event_index_ && notifications_enabled_) publish_avail_event(last_avail_);
  return std::optional<DescriptorChain>(std::move(chain));
}

void Virtqueue::publish_avail_event(uint16_t value) {
  const uint64_t offset = 4 + kUsedElementSize * layout_.size;
  store_release_u16(used_ + offset, value);
  memory_->written(layout_.device_area + offset, 2);
}

Result<void> Virtqueue::push(uint16_t head, uint32_t written) {
  const uint16_t size = layout_.size;
  if (head >= size) {
    return fail(ErrorCode::kInternal, fmt::format("virtqueue: push of descriptor {} of {}", head, size));
  }
  const uint64_t slot = used_index_ % size;
  std::byte* element = used_ + 4 + kUsedElementSize * slot;
  store_le<uint32_t>(element, head);
  store_le<uint32_t>(element + 4, written);
  ++used_index_;
  // The element must be visible before the index that publishes it (2.7.8.2).
  store_release_u16(used_ + 2, used_index_);
  memory_->written(layout_.device_area + 4 + kUsedElementSize * slot, kUsedElementSize);
  memory_->written(layout_.device_area + 2, 2);
  return {};
}

bool Virtqueue::should_signal() {
  if (signalled_valid_ && used_index_ == signalled_used_) return false;
  // The used idx store must be visible before the driver's suppression fields are read, or a
  // driver that just re-enabled interrupts could be missed (2.7.10).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool signal;
  if (event_index_) {
    const uint16_t used_event = load_acquire_u16(avail_ + 4 + 2 * uint64_t{layout_.size});
    const uint16_t old_index = signalled_used_;
    // vring_need_event(): signal when used_event lies in (old, new].
    signal = !signalled_valid_ ||
             static_cast<uint16_t>(used_index_ - used_event - 1) <
                 static_cast<uint16_t>(used_index_ - old_index);
  } else {
    signal = (load_acquire_u16(avail_) & kAvailNoInterrupt) == 0;
  }
  signalled_used_ = used_index_;
  signalled_valid_ = true;
  return signal;
}

void Virtqueue::set_notifications(bool enabled) {
  notifications_enabled_ = enabled;
  if (event_index_) {
    // Enabling asks for a kick once the driver moves past what it has published so far; while
    // disabled the old event point stays, so at most one more kick arrives.
    if (enabled) publish_avail_event(read_avail_index());
  } else {
    std::atomic_ref<uint16_t> flags(*reinterpret_cast<uint16_t*>(used_));
    flags.store(enabled ? 0 : kUsedNoNotify, std::memory_order_release);
    memory_->written(layout_.device_area, 2);
  }
  // The caller checks has_available() next; that read must not pass the store above.
  if (enabled) std::atomic_thread_fence(std::memory_order_seq_cst);
}

size_t Virtqueue::copy_from(const DescriptorChain& chain, uint64_t offset,
                            std::span<std::byte> out) const {
  size_t copied = 0;
  for (const GuestBuffer& buffer : chain.readable) {
    if (copied == out.size()) break;
    if (offset >= buffer.length) {
      offset -= buffer.length;
      continue;
    }
    const uint64_t length = std::min<uint64_t>(buffer.length - offset, out.size() - copied);
    const std::span<const std::byte> source = memory_->map_for_read(buffer.address + offset, length);
    // Buffers were checked at pop(); RAM never shrinks, so this holds unless the caller mixed queues.
    if (source.empty()) break;
    std::copy(source.begin(), source.end(), out.begin() + static_cast<ptrdiff_t>(copied));
    copied += length;
    offset = 0;
  }
  return copied;
}

size_t Virtqueue::copy_to(const DescriptorChain& chain, uint64_t offset,
                          std::span<const std::byte> in) const {
  size_t copied = 0;
  for (const GuestBuffer& buffer : chain.writable) {
    if (copied == in.size()) break;
    if (offset >= buffer.length) {
      offset -= buffer.length;
      continue;
    }
    const uint64_t length = std::min<uint64_t>(buffer.length - offset, in.size() - copied);
    const std::span<std::byte> target = memory_->map_for_write(buffer.address + offset, length);
    if (target.empty()) break;
    std::copy_n(in.begin() + static_cast<ptrdiff_t>(copied), length, target.begin());
    memory_->written(buffer.address + offset, length);
    copied += length;
    offset = 0;
  }
  return copied;
}

void Virtqueue::save(StateWriter& writer) const {
  writer.begin_section("virtqueue", kStateVersion);
  writer.put(layout_.size, last_avail_, used_index_, signalled_used_);
  writer.put_bool(signalled_valid_);
  writer.put_bool(notifications_enabled_);
  writer.end_section();
}

Result<void> Virtqueue::load(StateReader& reader) {
  auto version = reader.begin_section("virtqueue");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported, "virtqueue: saved state version is not supported");
  }
  uint16_t size = 0, last_avail = 0, used_index = 0, signalled_used = 0;
  uint8_t signalled_valid = 0, notifications_enabled = 0;
  if (auto got = reader.get(size, last_avail, used_index, signalled_used, signalled_valid,
                            notifications_enabled);
      !got) {
    return got;
  }
  if (size != layout_.size) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("virtqueue: saved queue has {} entries, this one {}", size, layout_.size));
  }
  // Chains in flight (popped, not yet used) can never number more than the queue holds.
  if (static_cast<uint16_t>(last_avail - used_index) > size) {
    return fail(ErrorCode::kCorrupt, "virtqueue: saved ring positions are inconsistent");
  }
  last_avail_ = last_avail;
  used_index_ = used_index;
  signalled_used_ = signalled_used;
  signalled_valid_ = signalled_valid != 0;
  notifications_enabled_ = notifications_enabled != 0;
  return reader.end_section();
}

}  // namespace lamina::virtio
