// The register BAR of VirtioPciFunction (virtio 1.2 section 4.1.4): common configuration,
// ISR, device configuration and notifications, plus the PCI configuration access window.

#include <array>

#include "base/byte_order.h"
#include "virtio/virtio_pci.h"
#include "virtio/virtio_pci_layout.h"

namespace lamina::virtio {

using namespace pci;

namespace {

struct Field {
  uint16_t offset;
  uint8_t size;
};

// struct virtio_pci_common_cfg, field by field; together they cover [0, common::kSize).
constexpr std::array<Field, 18> kCommonFields = {{
    {common::kDeviceFeatureSelect, 4},
    {common::kDeviceFeature, 4},
    {common::kDriverFeatureSelect, 4},
    {common::kDriverFeature, 4},
    {common::kConfigMsixVector, 2},
    {common::kNumQueues, 2},
    {common::kDeviceStatus, 1},
    {common::kConfigGeneration, 1},
    {common::kQueueSelect, 2},
    {common::kQueueSize, 2},
    {common::kQueueMsixVector, 2},
    {common::kQueueEnable, 2},
    {common::kQueueNotifyOff, 2},
    {common::kQueueDescriptor, 8},
    {common::kQueueDriver, 8},
    {common::kQueueDevice, 8},
    {common::kQueueNotifyData, 2},
    {common::kQueueReset, 2},
}};

const Field* field_at(uint64_t offset) {
  for (const Field& field : kCommonFields) {
    if (offset >= field.offset && offset < field.offset + field.size) return &field;
  }
  return nullptr;
}

uint64_t replace_half(uint64_t value, bool high, uint32_t half) {
  return high ? (value & 0xffffffffull) | (uint64_t{half} << 32) : (value & ~0xffffffffull) | half;
}

}  // namespace

void VirtioPciFunction::RegisterBar::read(uint64_t offset, std::span<std::byte> data) {
  owner_.register_read(offset, data);
}

void VirtioPciFunction::RegisterBar::write(uint64_t offset, std::span<const std::byte> data) {
  owner_.register_write(offset, data);
}

void VirtioPciFunction::register_read(uint64_t offset, std::span<std::byte> data) {
  const uint64_t size = data.size();
  if (offset < kCommonOffset + 0x1000) {
    common_read(offset - kCommonOffset, data);
  } else if (offset == kIsrOffset) {
    // 4.1.4.5: reading the ISR clears it and de-asserts INTx; any width reads it.
    store_le_sized(data, read_isr());
  } else if (offset >= kDeviceConfigOffset && offset - kDeviceConfigOffset + size <= config_size_) {
    device_->read_config(static_cast<uint32_t>(offset - kDeviceConfigOffset), data);
  } else {
    ignore();
    store_le_sized(data, ~uint64_t{0});
  }
}

void VirtioPciFunction::register_write(uint64_t offset, std::span<const std::byte> data) {
  const uint64_t size = data.size();
  if (offset < kCommonOffset + 0x1000) {
    common_write(offset - kCommonOffset, data);
  } else if (offset >= kDeviceConfigOffset && offset - kDeviceConfigOffset + size <= config_size_) {
    device_->write_config(static_cast<uint32_t>(offset - kDeviceConfigOffset), data);
  } else if (offset >= kNotifyOffset) {
    notify(offset - kNotifyOffset, data.size());
  } else {
    ignore();  // the ISR is read-only
  }
}

uint64_t VirtioPciFunction::common_field_value(uint16_t field) const {
  auto half = [](uint64_t value, uint32_t select) -> uint64_t {
    return select == 0 ? value & 0xffffffff : select == 1 ? value >> 32 : 0;
  };
  switch (field) {
    case common::kDeviceFeatureSelect: return device_feature_select_;
    case common::kDeviceFeature: return half(offered_features_, device_feature_select_);
    case common::kDriverFeatureSelect: return driver_feature_select_;
    case common::kDriverFeature: return half(driver_features_, driver_feature_select_);
    case common::kConfigMsixVector: return config_vector_;
    case common::kNumQueues: return queue_count_;
    case common::kDeviceStatus: return status_;
    case common::kConfigGeneration: return config_generation_;
    case common::kQueueSelect: return queue_select_;
    default: break;
  }
  // Queue fields of a queue that does not exist read 0 (a size of 0: "unavailable").
  if (queue_select_ >= queue_count_) return 0;
  const QueueConfig& queue = queues_[queue_select_];
  switch (field) {
    case common::kQueueSize: return queue.size;
    case common::kQueueMsixVector: return queue.msix_vector;
    case common::kQueueEnable: return queue.enabled ? 1 : 0;
    case common::kQueueNotifyOff: return queue_select_;
    case common::kQueueDescriptor: return queue.descriptor_table;
    case common::kQueueDriver: return queue.driver_area;
    case common::kQueueDevice: return queue.device_area;
    default: return 0;  // queue_notif_config_data, queue_reset: features not offered
  }
}

void VirtioPciFunction::common_read(uint64_t offset, std::span<std::byte> data) {
  // 4.1.3.1 asks drivers for natural widths; any width is answered byte by byte from the
  // fields it covers, so a sloppy read still sees consistent values.
  bool outside = false;
  {
    std::lock_guard lock(state_mutex_);
    const Field* cached = nullptr;
    uint64_t value = 0;
    for (size_t i = 0; i < data.size(); ++i) {
      const Field* field = field_at(offset + i);
      if (field == nullptr) {
        data[i] = std::byte{0xff};
        outside = true;
        continue;
      }
      if (field != cached) {
        value = common_field_value(field->offset);
        cached = field;
      }
      data[i] = static_cast<std::byte>(value >> (8 * (offset + i - field->offset)));
    }
  }
  if (outside) ignore();
}

void VirtioPciFunction::common_write(uint64_t offset, std::span<const std::byte> data) {
  const Field* field = field_at(offset);
  const uint64_t value = load_le_sized(data);
  // A whole field, or one 32-bit half of a 64-bit field (4.1.3.1); nothing else.
  bool high_half = false;
  if (field == nullptr) {
    ignore();
    return;
  }
  if (field->size == 8 && data.size() == 4 && (offset - field->offset) % 4 == 0) {
    high_half = offset != field->offset;
  } else if (offset != field->offset || data.size() != field->size) {
    ignore();
    return;
  }

  std::unique_lock control(control_mutex_);
  Action action;
  {
    std::lock_guard lock(state_mutex_);
    const bool driver_ok = (status_ & status::kDriverOk) != 0;
    QueueConfig* queue = queue_select_ < queue_count_ ? &queues_[queue_select_] : nullptr;
    // Queue layout is fixed once the queue is enabled or the device runs (4.1.4.3.2).
    QueueConfig* changeable = queue != nullptr && !queue->enabled && !driver_ok ? queue : nullptr;
    const auto vector = [this](uint64_t wanted) {
      // 4.1.5.1.2: a vector the table does not have reads back as NO_VECTOR.
      return wanted < msix_.vectors() ? static_cast<uint16_t>(wanted) : kNoVector;
    };
    switch (field->offset) {
      case common::kDeviceFeatureSelect:
        device_feature_select_ = static_cast<uint32_t>(value);
        break;
      case common::kDriverFeatureSelect:
        driver_feature_select_ = static_cast<uint32_t>(value);
        break;
      case common::kDriverFeature:
        // Features are fixed from FEATURES_OK on; only two 32-bit words exist.
        if ((status_ & status::kFeaturesOk) || driver_feature_select_ > 1) {
          if (value != 0 || (status_ & status::kFeaturesOk)) ignore();
          break;
        }
        driver_features_ = replace_half(driver_features_, driver_feature_select_ == 1,
                                        static_cast<uint32_t>(value));
        break;
      case common::kConfigMsixVector: config_vector_ = vector(value); break;
      case common::kDeviceStatus: action = write_status(static_cast<uint8_t>(value)); break;
      case common::kQueueSelect: queue_select_ = static_cast<uint16_t>(value); break;
      case common::kQueueSize:
        if (changeable == nullptr) {
          ignore();
          break;
        }
        changeable->size = static_cast<uint16_t>(value);
        break;
      case common::kQueueMsixVector:
        if (queue == nullptr) {
          ignore();
          break;
        }
        queue->msix_vector = vector(value);
        break;
      case common::kQueueEnable: action = write_queue_enable(static_cast<uint16_t>(value)); break;
      case common::kQueueDescriptor:
      case common::kQueueDriver:
      case common::kQueueDevice: {
        if (changeable == nullptr) {
          ignore();
          break;
        }
        uint64_t& target = field->offset == common::kQueueDescriptor ? changeable->descriptor_table
                           : field->offset == common::kQueueDriver   ? changeable->driver_area
                                                                     : changeable->device_area;
        target = data.size() == 8 ? value
                                  : replace_half(target, high_half, static_cast<uint32_t>(value));
        break;
      }
      default: ignore(); break;  // read-only fields, queue_reset (RING_RESET is not offered)
    }
  }
  switch (action.kind) {
    case Action::kNone: break;
    case Action::kReset: reset_locked(); break;
    case Action::kActivate: activate_locked(); break;
    case Action::kEnableQueue: enable_queue_locked(action.queue); break;
    case Action::kError: device_error(action.error); break;
  }
}

VirtioPciFunction::Action VirtioPciFunction::write_status(uint8_t value) {
  // 2.1.1/4.1.4.3.2: writing 0 resets the device; the read-back of 0 tells the driver it is done.
  if (value == 0) return {Action::kReset, 0, {}};
  // Bits only accumulate until a reset (2.1.1: the driver must not clear them); the
  // DEVICE_NEEDS_RESET bit is the device's own.
  uint8_t added = static_cast<uint8_t>(value & ~status_ & ~status::kDeviceNeedsReset);
  if (added & status::kFeaturesOk) {
    // 3.1.1 step 5-6: FEATURES_OK only for a subset of the offered features; a modern-only
    // device needs VIRTIO_F_VERSION_1 (section 6). Left unset, the driver sees the refusal.
    const bool acceptable =
        (driver_features_ & ~offered_features_) == 0 && (driver_features_ & kFeatureVersion1) != 0;
    if (!acceptable) added &= static_cast<uint8_t>(~status::kFeaturesOk);
  }
  status_ |= added;
  if (!(added & status::kDriverOk)) return {};
  if (!(status_ & status::kFeaturesOk)) {
    return {Action::kError, 0, "the driver set DRIVER_OK without FEATURES_OK"};
  }
  if (status_ & status::kDeviceNeedsReset) return {};  // no activation until a reset
  return {Action::kActivate, 0, {}};
}

VirtioPciFunction::Action VirtioPciFunction::write_queue_enable(uint16_t value) {
  if (queue_select_ >= queue_count_ || value != 1) {
    ignore();  // 4.1.4.3.2: the driver must not write 0 (RING_RESET is not offered)
    return {};
  }
  const QueueConfig& queue = queues_[queue_select_];
  if (queue.enabled) return {};
  if (status_ & status::kDriverOk) {
    ignore();  // queues are set up before DRIVER_OK (3.1.1 step 7)
    return {};
  }
  if (!(status_ & status::kFeaturesOk)) {
    return {Action::kError, 0, "a queue was enabled before FEATURES_OK"};
  }
  return {Action::kEnableQueue, queue_select_, {}};
}

uint8_t VirtioPciFunction::read_isr() {
  std::lock_guard lock(state_mutex_);
  const uint8_t value = isr_;
  isr_ = 0;
  update_intx_locked();
  return value;
}

void VirtioPciFunction::notify(uint64_t offset, size_t size) {
  // The doorbell's address names the queue; the written value (the queue index, or with
  // NOTIFICATION_DATA more) is not needed.
  const uint64_t index = offset / kNotifyOffMultiplier;
  if ((size != 2 && size != 4) || offset % kNotifyOffMultiplier != 0 || index >= queue_count_) {
    ignore();
    return;
  }
  std::shared_lock control(control_mutex_);
  {
    std::lock_guard lock(state_mutex_);
    QueueConfig& queue = queues_[index];
    if (!queue.enabled || (status_ & status::kDeviceNeedsReset)) {
      ignore();
      return;
    }
    if (!activated_) {
      queue.kicked_early = true;
      return;
    }
  }
  device_->queue_notify(static_cast<uint16_t>(index));
}

std::optional<VirtioPciFunction::WindowTarget> VirtioPciFunction::pci_config_window() {
  const uint16_t cap = pci_config_capability_;
  const auto bar = static_cast<uint8_t>(stored_config(cap + kCapBar, 1));
  const uint32_t offset = stored_config(cap + kCapOffset, 4);
  const uint32_t length = stored_config(cap + kCapLength, 4);
  // 4.1.4.8: length 1, 2 or 4, offset aligned to it, inside the BAR.
  hw::Device* region = bar == kRegisterBar ? static_cast<hw::Device*>(&register_bar_)
                       : bar == kMsixBar   ? static_cast<hw::Device*>(&msix_)
                                           : nullptr;
  const uint64_t bar_size = bar == kRegisterBar ? register_bar_size_ : msix_bar_size_;
  if (region == nullptr || (length != 1 && length != 2 && length != 4) || offset % length != 0 ||
      uint64_t{offset} + length > bar_size) {
    ignore();
    return std::nullopt;
  }
  return WindowTarget{region, offset, length};
}

void VirtioPciFunction::pci_config_window_write() {
  auto target = pci_config_window();
  if (!target) return;
  std::array<std::byte, 4> bytes{};
  store_le_sized(bytes, stored_config(pci_config_capability_ + kPciCfgCapData, 4));
  target->region->write(target->offset, std::span(bytes).first(target->length));
}

std::optional<uint32_t> VirtioPciFunction::config_read_hook(uint16_t offset, unsigned size) const {
  const unsigned data = pci_config_capability_ + kPciCfgCapData;
  if (pci_config_capability_ == 0 || offset < data || offset + size > data + 4) return std::nullopt;
  // A read of pci_cfg_data performs the BAR read (4.1.4.8), which may have side effects (the
  // ISR clears); every VirtioPciFunction is created non-const, so dropping const is sound.
  auto* self = const_cast<VirtioPciFunction*>(this);
  auto target = self->pci_config_window();
  if (!target) return std::nullopt;
  std::array<std::byte, 4> bytes{};
  target->region->read(target->offset, std::span(bytes).first(target->length));
  const uint64_t value = load_le_sized(bytes) >> (8 * (offset - data));
  return static_cast<uint32_t>(size >= 4 ? value : value & ((uint64_t{1} << (8 * size)) - 1));
}

}  // namespace lamina::virtio
