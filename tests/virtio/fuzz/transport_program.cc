#include "transport_program.h"

#include <vector>

#include "../virtqueue_driver.h"
#include "virtio/virtio_console.h"
#include "virtio/virtio_rng.h"

namespace lamina::virtio::testing {

namespace {

// Consumes the input front to back; past the end everything reads as zero.
class Input {
 public:
  explicit Input(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  bool done() const { return position_ >= bytes_.size(); }
  uint64_t take(unsigned count) {
    uint64_t value = 0;
    for (unsigned i = 0; i < count; ++i) {
      const uint64_t byte = position_ < bytes_.size() ? bytes_[position_] : 0;
      ++position_;
      value |= byte << (8 * i);
    }
    return value;
  }
  uint8_t byte() { return static_cast<uint8_t>(take(1)); }

 private:
  std::span<const uint8_t> bytes_;
  size_t position_ = 0;
};

constexpr unsigned kSizes[] = {1, 2, 4, 8};
constexpr uint64_t kRingArea = 0x10000;  // rings and indirect tables live below this

}  // namespace

TransportProgram::TransportProgram(Device device)
    : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))), dma_(memory_), device_(device) {
  if (device_ == Device::kConsole) {
    harness_.emplace(std::make_unique<VirtioConsole>(console_end_), dma_);
    return;
  }
  if (device_ == Device::kTablet) {
    auto tablet = std::make_unique<VirtioTablet>();
    tablet_ = tablet.get();
    harness_.emplace(std::move(tablet), dma_);
    return;
  }
  auto rng = std::make_unique<VirtioRng>();
  rng_ = rng.get();
  harness_.emplace(std::move(rng), dma_);
}

uint64_t TransportProgram::bytes_served() const {
  if (tablet_ != nullptr) return tablet_->events_delivered() * 8;
  return rng_ != nullptr ? rng_->bytes_served() : console_end_.written;
}

void TransportProgram::run(std::span<const uint8_t> bytes) {
  Input input(bytes);
  PciHarness& h = *harness_;
  for (unsigned step = 0; step < 4096 && !input.done(); ++step) {
    const uint8_t op = input.byte();
    // The tablet has work only when the host posts: a pointer move before every other step.
    if (tablet_ != nullptr && step % 2 == 0) {
      tablet_->post_pointer(op, step, 256, 4096, static_cast<uint8_t>(op & 7), 0);
    }
    switch (op % 11) {
      case 0: {  // common configuration write
        const auto offset = static_cast<uint16_t>(input.byte() % 0x48);
        h.set_common(offset, kSizes[input.byte() % 4], input.take(8));
        break;
      }
      case 1: {  // register BAR read anywhere
        const uint64_t offset = input.take(2);
        std::byte data[8];
        h.mmio().read(PciHarness::kRegisterBase + offset,
                      std::span(data, kSizes[input.byte() % 4]));
        break;
      }
      case 2: {  // doorbells: mostly queue 0 or 1 with a 16-bit write, sometimes anything
        const uint8_t shape = input.byte();
        const uint64_t offset = shape & 0x80 ? shape % 16 : (shape % 2) * 4;
        const unsigned size = shape & 0x40 ? kSizes[shape % 4] : 2;
        h.write(pci::CapabilityType::kNotify, offset, size, input.take(2));
        break;
      }
      case 3: (void)h.read_isr(); break;
      case 4: {  // PCI config space (BARs, command, MSI-X control, the access window)
        const auto offset = static_cast<uint16_t>(input.byte());
        const unsigned size = kSizes[input.byte() % 3];
        h.set_config(offset, static_cast<uint32_t>(input.take(4)), size);
        break;
      }
      case 5: {  // raw ring contents
        const uint64_t address = (input.take(2) * 8) % kRingArea;
        const uint64_t value = input.take(8);
        std::byte data[8];
        store_le<uint64_t>(data, value);
        (void)memory_.write(address, data);
        break;
      }
      case 6: {  // bring-up with a layout from the input (often valid, sometimes not)
        // Mostly what a driver would accept (VERSION_1, INDIRECT_DESC, EVENT_IDX), sometimes
        // anything.
        const uint8_t choice = input.byte();
        const uint64_t features =
            choice % 8 == 0 ? input.take(8) : (uint64_t{1} << 32) | (input.take(1) & 0x3) << 28;
        h.negotiate(features);
        VirtqueueLayout layout;
        layout.size = static_cast<uint16_t>(1u << (input.byte() % 10));
        layout.descriptor_table = (input.take(2) * 16) % kRingArea;
        layout.driver_area = (input.take(2) * 2) % kRingArea;
        layout.device_area = (input.take(2) * 4) % (kRingArea + 0x100);
        const auto queue = static_cast<uint16_t>(input.byte() % 2);
        h.setup_queue(queue, layout, input.byte() % 2 ? 0 : pci::kNoVector);
        h.driver_ok();
        break;
      }
      case 7: {  // MSI-X on or off, table entries
        if (input.byte() % 2) {
          h.enable_msix(2);
        } else {
          h.write_msix(input.byte() % 0x40, static_cast<uint32_t>(input.take(4)));
        }
        break;
      }
      case 8: {  // save, then load the same stream or a damaged copy
        StateWriter writer;
        h.function().save(writer);
        std::vector<std::byte> stream = writer.data();
        if (!stream.empty() && input.byte() % 2) {
          stream[input.take(2) % stream.size()] ^= static_cast<std::byte>(input.byte() | 1);
        }
        StateReader reader(stream);
        (void)h.function().load(reader);
        break;
      }
      case 10: {  // a plausible chain published on a queue's current rings
        h.set_common(pci::common::kQueueSelect, 2, input.byte() % 2);
        const uint64_t size = h.common(pci::common::kQueueSize, 2);
        const uint64_t table = h.common(pci::common::kQueueDescriptor, 8);
        const uint64_t avail = h.common(pci::common::kQueueDriver, 8);
        if (size == 0) break;
        const auto slot = static_cast<uint16_t>(input.byte() % size);
        const uint32_t length = static_cast<uint32_t>(input.take(2)) % 8192;
        const uint64_t address = kRingArea + (input.take(3) * 16) % (kRamSize - kRingArea - 8192);
        // Device-writable, driver-readable, or any flags (NEXT, INDIRECT).
        const uint8_t kind = input.byte();
        const uint16_t flags = kind % 3 == 0   ? 2
                               : kind % 3 == 1 ? 0
                                               : static_cast<uint16_t>(kind % 8);
        std::byte descriptor[16];
        store_le<uint64_t>(descriptor, address);
        store_le<uint32_t>(descriptor + 8, length);
        store_le<uint16_t>(descriptor + 12, flags);
        store_le<uint16_t>(descriptor + 14, static_cast<uint16_t>(input.byte() % size));
        (void)memory_.write(table + 16 * slot, descriptor);
        std::byte index[2];
        if (!memory_.read(avail + 2, index)) break;
        const uint16_t next = load_le<uint16_t>(index);
        std::byte entry[2];
        store_le<uint16_t>(entry, slot);
        (void)memory_.write(avail + 4 + 2 * (next % size), entry);
        store_le<uint16_t>(index, static_cast<uint16_t>(next + 1));
        (void)memory_.write(avail + 2, index);
        break;
      }
      case 9: {  // the device and the transport's own signals
        const uint8_t which = input.byte();
        if (which % 3 == 0) h.function().signal_config_change();
        if (which % 3 == 1) h.function().signal_queue(static_cast<uint16_t>(input.byte() % 3));
        if (which % 3 == 2) h.function().reset();
        break;
      }
    }
  }
}

bool TransportProgram::recovers() {
  PciHarness& h = *harness_;
  // The driver's recovery: a clean config space view, then a device reset and bring-up.
  h.set_config(0x04, 0, 2);
  h.reprogram();
  if (!h.negotiate(uint64_t{1} << 32)) return false;
  TestDriver driver(memory_, 8, 0x20000, 0x30000);
  h.setup_queue(0, driver.layout());
  TestDriver transmit(memory_, 8, 0x24000, 0x34000);
  if (device_ != Device::kRng) h.setup_queue(1, transmit.layout());
  h.driver_ok();
  if (h.status() & pci::status::kDeviceNeedsReset) return false;
  // Queue 0 takes device-writable buffers on both devices (entropy, console input).
  driver.add_chain({{driver.allocate(32), 32, true}});
  h.kick(0);
  if (device_ == Device::kTablet) {
    // A fresh driver gets the pointer as one event per buffer.
    tablet_->post_pointer(1, 2, 10, 10, 0, 0);
    return driver.used_index() == 1 && driver.used_element(0).second == 8;
  }
  if (driver.used_index() != 1 || driver.used_element(0).second != 32) return false;
  if (device_ == Device::kRng) return true;
  const uint64_t before = console_end_.written;
  transmit.add_chain({{transmit.allocate(8), 8, false}});
  h.kick(1);
  return transmit.used_index() == 1 && console_end_.written == before + 8;
}

}  // namespace lamina::virtio::testing
