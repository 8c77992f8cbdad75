#include "hw/pci_device.h"

#include <bit>

namespace lamina::hw {

namespace {
constexpr uint16_t kCommand = 0x04, kStatus = 0x06, kBar0 = 0x10, kSubsystemVendor = 0x2c,
                   kCapabilityPointer = 0x34, kInterruptLine = 0x3c, kInterruptPin = 0x3d;
constexpr uint16_t kCommandIo = 1u << 0, kCommandMemory = 1u << 1,
                   kCommandInterruptDisable = 1u << 10;
// I/O, memory, bus master, parity error response, SERR#, interrupt disable.
constexpr uint16_t kCommandWritable = 0x0547;
constexpr uint16_t kStatusInterrupt = 1u << 3, kStatusCapabilities = 1u << 4;
// Parity, signalled/received aborts, SERR#, detected parity: write 1 to clear.
constexpr uint16_t kStatusWriteClear = 0xf900;
constexpr uint32_t kStateVersion = 1;
}  // namespace

PciDevice::PciDevice(std::string name, uint16_t vendor, uint16_t device, uint32_t class_code,
                     uint8_t revision)
    : name_(std::move(name)) {
  set_config(0x00, 2, vendor);
  set_config(0x02, 2, device);
  set_config(0x08, 4, (class_code << 8) | revision);
  set_writable(kCommand, 2, kCommandWritable);
  write_clear_[kStatus + 1] = kStatusWriteClear >> 8;
  set_writable(0x0c, 1, 0xff);  // cache line size
  set_writable(kInterruptLine, 1, 0xff);
}

PciDevice::~PciDevice() {
  std::lock_guard lock(mutex_);
  // Leave no bus pointing at a destroyed region's owner.
  for (Bar& bar : bars_) {
    if (!bar.mapped_at) continue;
    Bus* bus = bar.kind == PciBarKind::kIo ? io_bus_ : mmio_bus_;
    if (bus != nullptr) (void)bus->unmap(*bar.mapped_at);
  }
}

void PciDevice::set_config(uint16_t offset, unsigned size, uint32_t value) {
  for (unsigned i = 0; i < size && offset + i < kConfigSize; ++i) {
    config_[offset + i] = static_cast<uint8_t>(value >> (8 * i));
  }
}

void PciDevice::set_writable(uint16_t offset, unsigned size, uint32_t mask) {
  for (unsigned i = 0; i < size && offset + i < kConfigSize; ++i) {
    writable_[offset + i] = static_cast<uint8_t>(mask >> (8 * i));
  }
}

void PciDevice::set_subsystem(uint16_t vendor, uint16_t id) {
  set_config(kSubsystemVendor, 2, vendor);
  set_config(kSubsystemVendor + 2, 2, id);
}

void PciDevice::set_interrupt_pin(uint8_t pin) { config_[kInterruptPin] = pin <= 4 ? pin : 0; }

void PciDevice::add_bar(unsigned index, PciBarKind kind, uint64_t size, Device& region,
                        bool prefetchable) {
  const uint64_t minimum = kind == PciBarKind::kIo ? 4 : 16;
  if (index >= kBars || (kind == PciBarKind::kMemory64 && index + 1 >= kBars)) return;
  size = std::bit_ceil(std::max(size, minimum));
  Bar& bar = bars_[index];
  bar.kind = kind;
  bar.size = size;
  bar.region = &region;
  const uint16_t offset = static_cast<uint16_t>(kBar0 + 4 * index);
  // The low bits read back the BAR's type; the address bits below the size are hardwired 0,
  // which is what size probing (writing all ones) reads back.
  uint32_t flags = 0;
  if (kind == PciBarKind::kIo) {
    flags = 0x1;
    set_writable(offset, 4, static_cast<uint32_t>(~(size - 1)) & 0xfffffffc);
  } else {
    flags = (kind == PciBarKind::kMemory64 ? 0x4 : 0x0) | (prefetchable ? 0x8 : 0x0);
    set_writable(offset, 4, static_cast<uint32_t>(~(size - 1)) & 0xfffffff0);
    if (kind == PciBarKind::kMemory64) {
      set_writable(offset + 4, 4, static_cast<uint32_t>(~(size - 1) >> 32));
    }
  }
  set_config(offset, 4, flags);
}

uint8_t PciDevice::add_capability(uint8_t id, uint8_t length) {
  const uint8_t offset = next_capability_;
  if (offset == 0 || offset + length > 0x100) return 0;  // out of legacy config space
  config_[offset] = id;
  config_[offset + 1] = 0;
  if (last_capability_ == 0) {
    config_[kCapabilityPointer] = offset;
  } else {
    config_[last_capability_ + 1] = offset;
  }
  last_capability_ = offset;
  config_[kStatus] |= kStatusCapabilities;
  const unsigned next = (offset + length + 3u) & ~3u;
  next_capability_ = next >= 0x100 ? 0 : static_cast<uint8_t>(next);
  return offset;
}

void PciDevice::attach_buses(Bus& io, Bus& mmio) {
  std::lock_guard lock(mutex_);
  io_bus_ = &io;
  mmio_bus_ = &mmio;
  update_mappings();
}

void PciDevice::set_intx_line(IrqLine* line) {
  std::lock_guard lock(mutex_);
  if (intx_asserted_ && intx_line_ != nullptr) intx_line_->set_level(false);
  intx_asserted_ = false;
  intx_line_ = line;
  update_intx_line();
}

void PciDevice::add_config_listener(std::function<void(uint16_t, unsigned)> listener) {
  std::lock_guard lock(mutex_);
  listeners_.push_back(std::move(listener));
}

uint32_t PciDevice::read_config_locked(uint16_t offset, unsigned size) const {
  uint32_t value = 0;
  for (unsigned i = 0; i < size && i < 4; ++i) {
    const uint8_t byte = offset + i < kConfigSize ? config_[offset + i] : 0xff;
    value |= static_cast<uint32_t>(byte) << (8 * i);
  }
  return value;
}

uint32_t PciDevice::config_read(uint16_t offset, unsigned size) const {
  if (auto computed = config_read_hook(offset, size)) return *computed;
  return stored_config(offset, size);
}

uint32_t PciDevice::stored_config(uint16_t offset, unsigned size) const {
  std::lock_guard lock(mutex_);
  return read_config_locked(offset, size);
}

void PciDevice::config_write(uint16_t offset, unsigned size, uint32_t value) {
  std::vector<std::function<void(uint16_t, unsigned)>> listeners;
  {
    std::lock_guard lock(mutex_);
    bool touches_decode = false;
    for (unsigned i = 0; i < size && i < 4 && offset + i < kConfigSize; ++i) {
      const unsigned at = offset + i;
      const auto byte = static_cast<uint8_t>(value >> (8 * i));
      config_[at] = static_cast<uint8_t>((config_[at] & ~writable_[at]) | (byte & writable_[at]));
      config_[at] &= static_cast<uint8_t>(~(byte & write_clear_[at]));
      if (at == kCommand || at == kCommand + 1 || (at >= kBar0 && at < kBar0 + 4 * kBars)) {
        touches_decode = true;
      }
    }
    if (touches_decode) {
      update_mappings();
      update_intx_line();
    }
    listeners = listeners_;
  }
  config_written(offset, size);
  for (auto& listener : listeners) listener(offset, size);
}

uint64_t PciDevice::bar_address(unsigned index) const {
  const uint16_t offset = static_cast<uint16_t>(kBar0 + 4 * index);
  const uint64_t low = read_config_locked(offset, 4);
  const Bar& bar = bars_[index];
  if (bar.kind == PciBarKind::kIo) return low & ~uint64_t{3};
  uint64_t address = low & ~uint64_t{15};
  if (bar.kind == PciBarKind::kMemory64) {
    address |= static_cast<uint64_t>(read_config_locked(offset + 4, 4)) << 32;
  }
  return address;
}

void PciDevice::update_mappings() {
  if (io_bus_ == nullptr || mmio_bus_ == nullptr) return;
  const uint16_t command = static_cast<uint16_t>(read_config_locked(kCommand, 2));
  for (unsigned index = 0; index < kBars; ++index) {
    Bar& bar = bars_[index];
    if (bar.size == 0 || bar.region == nullptr) continue;
    const bool io = bar.kind == PciBarKind::kIo;
    Bus& bus = io ? *io_bus_ : *mmio_bus_;
    const uint64_t address = bar_address(index);
    const uint64_t limit = io ? 0x10000 : (bar.kind == PciBarKind::kMemory32 ? 1ull << 32 : 0);
    // Address 0 means "not assigned"; a BAR must also fit its address space.
    const bool fits = limit == 0 ? address + bar.size > address : address + bar.size <= limit;
    std::optional<uint64_t> wanted;
    if ((command & (io ? kCommandIo : kCommandMemory)) && address != 0 && fits) wanted = address;
    if (wanted == bar.mapped_at) continue;
    if (bar.mapped_at) (void)bus.unmap(*bar.mapped_at);
    bar.mapped_at.reset();
    if (!wanted) continue;
    if (auto mapped = bus.map(*wanted, bar.size, *bar.region); mapped) {
      bar.mapped_at = wanted;
    } else if (log_limiter_.allow()) {
      log_warn("pci {}: BAR{} not mapped: {}", name_, index, mapped.error().message());
    }
  }
}

void PciDevice::update_intx_line() {
  const uint16_t command = static_cast<uint16_t>(read_config_locked(kCommand, 2));
  if (intx_level_) {
    config_[kStatus] |= kStatusInterrupt;
  } else {
    config_[kStatus] &= ~kStatusInterrupt;
  }
  const bool assert = intx_level_ && !(command & kCommandInterruptDisable);
  if (assert != intx_asserted_ && intx_line_ != nullptr) intx_line_->set_level(assert);
  intx_asserted_ = assert;
}

void PciDevice::set_intx(bool level) {
  std::lock_guard lock(mutex_);
  intx_level_ = level;
  update_intx_line();
}

std::optional<uint64_t> PciDevice::bar_mapping(unsigned index) const {
  std::lock_guard lock(mutex_);
  return index < kBars ? bars_[index].mapped_at : std::nullopt;
}

void PciDevice::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("pci-function", kStateVersion);
  writer.put_bytes(std::as_bytes(std::span(config_)));
  writer.put(intx_level_);
  writer.end_section();
}

Result<void> PciDevice::load(StateReader& reader) {
  auto version = reader.begin_section("pci-function");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("pci {}: saved state version {} is not supported", name_, *version));
  }
  std::array<uint8_t, kConfigSize> saved{};
  bool intx = false;
  if (auto result = reader.get_bytes(std::as_writable_bytes(std::span(saved))); !result)
    return result;
  if (auto result = reader.get(intx); !result) return result;
  {
    std::lock_guard lock(mutex_);
    // Only what the guest could have written is taken from the stream; identity, BAR types and
    // capability layout stay as this build of the device defines them.
    for (size_t at = 0; at < kConfigSize; ++at) {
      config_[at] =
          static_cast<uint8_t>((config_[at] & ~writable_[at]) | (saved[at] & writable_[at]));
    }
    intx_level_ = intx;
    update_mappings();
    update_intx_line();
  }
  config_written(0, 0);
  return reader.end_section();
}

}  // namespace lamina::hw
