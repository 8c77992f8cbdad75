// libFuzzer target: the input is the guest's side of one split virtqueue (descriptor table and
// available ring, plus indirect tables and buffers in the RAM behind them). The device pops
// and completes chains until the ring is empty or broken; every buffer handed out must lie in
// RAM, and nothing may crash or loop.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "base/guest_memory.h"
#include "virtio/virtqueue.h"

namespace {

constexpr uint64_t kRamSize = 1 << 20;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lamina;
  if (size < 2) return 0;
  static auto memory = GuestMemory::create({{0, kRamSize}});
  if (!memory) std::abort();
  // The input replaces the start of RAM (rings live at 0); the rest keeps earlier inputs,
  // as a guest's stale RAM would.
  const size_t copied = std::min<size_t>(size - 2, kRamSize);
  std::memcpy(memory->host_pointer(0, kRamSize), data + 2, copied);
  virtio::DmaMemory dma(*memory);

  virtio::VirtqueueLayout layout;
  layout.size = static_cast<uint16_t>(1u << (data[0] % 16));
  layout.descriptor_table = 0;
  layout.driver_area = 16ull * layout.size;
  layout.device_area = (layout.driver_area + 6 + 2ull * layout.size + 3) & ~uint64_t{3};
  auto queue = virtio::Virtqueue::create(dma, layout, data[1] & 1, data[1] & 2);
  if (!queue) return 0;
  if (data[1] & 4) queue->set_notifications(false);
  for (int step = 0; step < 64; ++step) {
    auto popped = queue->pop();
    if (!popped || !popped->has_value()) break;
    for (const auto* list : {&(*popped)->readable, &(*popped)->writable}) {
      for (const virtio::GuestBuffer& buffer : *list) {
        if (!memory->contains(buffer.address, buffer.length)) std::abort();
      }
    }
    std::byte scratch[64];
    (void)queue->copy_from(**popped, step, scratch);
    (void)queue->copy_to(**popped, step, scratch);
    if (!queue->push((*popped)->head, static_cast<uint32_t>((*popped)->writable_length))) std::abort();
    (void)queue->should_signal();
  }
  return 0;
}
