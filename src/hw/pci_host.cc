#include "hw/pci_host.h"

#include <algorithm>

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
enum Window : unsigned { kAddress = 0, kData = 1, kEcam = 2 };
// CONFIG_ADDRESS: enable bit 31, bus 23-16, device 15-11, function 10-8, register 7-2.
constexpr uint32_t kAddressWritable = 0x80fffffc;
constexpr uint32_t kStateVersion = 1;

class HostBridgeFunction final : public PciDevice {
 public:
  HostBridgeFunction(uint16_t vendor, uint16_t device)
      : PciDevice("host-bridge", vendor, device, 0x060000) {}
};
}  // namespace

PciHost::PciHost(Bus& io, Bus& mmio, Options options)
    : io_(io),
      mmio_(mmio),
      options_(options),
      ecam_buses_(std::clamp(options.ecam_buses, 1u, 256u)),
      address_window_(*this, kAddress, "pci-config-address"),
      data_window_(*this, kData, "pci-config-data"),
      ecam_window_(*this, kEcam, "pci-ecam"),
      bridge_(options.bridge ? nullptr
                             : std::make_unique<HostBridgeFunction>(options.vendor,
                                                                    options.device)),
      bridge_function_(options.bridge ? options.bridge : bridge_.get()) {
  bridge_function_->attach_buses(io_, mmio_);
  functions_[0] = bridge_function_;
}

Result<void> PciHost::attach(uint8_t device, uint8_t function, PciDevice& pci_device) {
  if (device >= 32 || function >= 8) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("pci: {} at {:02x}.{} is outside bus 0's 32 devices of 8 functions",
                            pci_device.name(), device, function));
  }
  std::lock_guard lock(mutex_);
  PciDevice*& slot = functions_[device * 8u + function];
  if (slot != nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("pci: {} cannot use 00:{:02x}.{}, taken by {}", pci_device.name(),
                            device, function, slot->name()));
  }
  slot = &pci_device;
  pci_device.attach_buses(io_, mmio_);
  return {};
}

Result<void> PciHost::detach(uint8_t device, uint8_t function) {
  if (device == 0 || device >= 32 || function >= 8) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("pci: 00:{:02x}.{} cannot be unplugged", device, function));
  }
  std::lock_guard lock(mutex_);
  PciDevice*& slot = functions_[device * 8u + function];
  if (slot == nullptr) {
    return fail(ErrorCode::kNotFound, fmt::format("pci: 00:{:02x}.{} is empty", device, function));
  }
  slot = nullptr;
  return {};
}

PciDevice* PciHost::function_at(unsigned bus, unsigned device, unsigned function) const {
  if (bus != 0 || device >= 32 || function >= 8) return nullptr;
  return functions_[device * 8 + function];
}

uint32_t PciHost::config_read(unsigned bus, unsigned device, unsigned function, uint16_t reg,
                              unsigned size) const {
  PciDevice* target = function_at(bus, device, function);
  if (target == nullptr) return 0xffffffff;  // master abort: all ones
  uint32_t value = target->config_read(reg, size);
  // Header type bit 7 tells software to probe functions 1-7 of this device.
  if (function == 0 && reg <= 0x0e && reg + size > 0x0e) {
    bool multifunction = false;
    for (unsigned other = 1; other < 8; ++other)
      multifunction |= functions_[device * 8 + other] != nullptr;
    if (multifunction) value |= 0x80u << (8 * (0x0e - reg));
  }
  return value;
}

void PciHost::config_write(unsigned bus, unsigned device, unsigned function, uint16_t reg,
                           unsigned size, uint32_t value) {
  PciDevice* target = function_at(bus, device, function);
  if (target != nullptr) target->config_write(reg, size, value);
}

void PciHost::window_read(unsigned window, uint64_t offset, std::span<std::byte> data) {
  uint64_t value = ~0ull;
  const unsigned size = static_cast<unsigned>(data.size());
  if (window == kAddress) {
    if (offset == 0 && size == 4) {
      std::lock_guard lock(mutex_);
      value = config_address_;
    } else if (offset == 1 && size == 1 && options_.reset_control != nullptr) {
      options_.reset_control->read(0, data);
      return;
    }
  } else if (size <= 4) {
    std::lock_guard lock(mutex_);
    if (window == kData && (config_address_ & 0x80000000u) && offset + size <= 4) {
      const uint32_t address = config_address_;
      value = config_read((address >> 16) & 0xff, (address >> 11) & 31, (address >> 8) & 7,
                          static_cast<uint16_t>((address & 0xfc) + offset), size);
    } else if (window == kEcam && offset < ecam_size()) {
      // Accesses that cross a function's 4 KiB are not decoded (PCIe 7.2.2.2).
      if ((offset & 0xfff) + size <= 0x1000) {
        value = config_read(static_cast<unsigned>(offset >> 20), (offset >> 15) & 31,
                            (offset >> 12) & 7, static_cast<uint16_t>(offset & 0xfff), size);
      }
    }
  }
  store_le_sized(data, size >= 8 ? value : (value | (~0ull << (8 * size))));
}

void PciHost::window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) {
  const unsigned size = static_cast<unsigned>(data.size());
  if (size == 0 || size > 4) return;
  const auto value = static_cast<uint32_t>(load_le_sized(data));
  if (window == kAddress) {
    if (offset == 0 && size == 4) {
      std::lock_guard lock(mutex_);
      config_address_ = value & kAddressWritable;
    } else if (offset == 1 && size == 1 && options_.reset_control != nullptr) {
      options_.reset_control->write(0, data);
    }
    return;
  }
  std::lock_guard lock(mutex_);
  if (window == kData && (config_address_ & 0x80000000u) && offset + size <= 4) {
    const uint32_t address = config_address_;
    config_write((address >> 16) & 0xff, (address >> 11) & 31, (address >> 8) & 7,
                 static_cast<uint16_t>((address & 0xfc) + offset), size, value);
  } else if (window == kEcam && offset < ecam_size() && (offset & 0xfff) + size <= 0x1000) {
    config_write(static_cast<unsigned>(offset >> 20), (offset >> 15) & 31, (offset >> 12) & 7,
                 static_cast<uint16_t>(offset & 0xfff), size, value);
  }
}

void PciHost::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("pci-host", kStateVersion);
  writer.put(config_address_);
  writer.end_section();
  bridge_function_->save(writer);
}

Result<void> PciHost::load(StateReader& reader) {
  auto version = reader.begin_section("pci-host");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("pci-host: saved state version {} is not supported", *version));
  }
  {
    std::lock_guard lock(mutex_);
    if (auto result = reader.get(config_address_); !result) return result;
    config_address_ &= kAddressWritable;
  }
  if (auto result = reader.end_section(); !result) return result;
  return bridge_function_->load(reader);
}

}  // namespace lamina::hw
