#include "virtio/virtio_pci.h"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "virtio/virtio_pci_layout.h"

namespace lamina::virtio {

using namespace pci;

namespace {

constexpr uint64_t kPage = 0x1000;
// MSI-X allows 2048 vectors; one is the configuration vector.
constexpr uint16_t kMaxQueues = hw::MsixCapability::kMaxVectors - 1;

uint64_t align_up(uint64_t value, uint64_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

// PCI class codes (PCI Code and ID Assignment spec): what lspci and firmware show.
uint32_t class_code_of(DeviceType type) {
  switch (type) {
    case DeviceType::kNet: return 0x020000;      // network controller, Ethernet
    case DeviceType::kBlock: return 0x010000;    // mass storage, SCSI (as other VMMs use)
    case DeviceType::kConsole: return 0x078000;  // communication controller, other
    case DeviceType::kInput: return 0x098000;    // input device controller, other
    case DeviceType::kEntropy:
    case DeviceType::kMemory: break;
  }
  return 0xff0000;  // device does not fit any defined class
}

uint16_t clamp_queue_count(uint16_t count) { return std::min(count, kMaxQueues); }

uint64_t offered_features_of(const VirtioDevice& device) {
  // Bits 24-49 are the transport's (section 6); the device offers the rest.
  constexpr uint64_t kTransportBits = ((uint64_t{1} << 50) - 1) & ~((uint64_t{1} << 24) - 1);
  return (device.device_features() & ~kTransportBits) | kFeatureVersion1 |
         kFeatureIndirectDescriptors | kFeatureRingEventIndex;
}

uint64_t register_bar_size_for(uint16_t queues) {
  const uint64_t notify =
      align_up(std::max<uint64_t>(uint64_t{queues} * kNotifyOffMultiplier, 4), kPage);
  return std::bit_ceil(kNotifyOffset + notify);
}

uint16_t msix_vectors_for(uint16_t queues) { return static_cast<uint16_t>(queues + 1); }
uint32_t msix_pba_offset(uint16_t vectors) { return uint32_t{vectors} * 16u; }
uint64_t msix_bar_size_for(uint16_t vectors) {
  const uint64_t used = msix_pba_offset(vectors) + ((vectors + 63u) / 64u) * 8u;
  return std::bit_ceil(std::max(used, kPage));
}

}  // namespace

VirtioPciFunction::VirtioPciFunction(std::unique_ptr<VirtioDevice> device, const DmaMemory& memory,
                                     hw::MsiSink& msi_sink)
    : hw::PciDevice(std::string(device->name()), kVendorId,
                    static_cast<uint16_t>(kDeviceIdBase + static_cast<uint16_t>(device->type())),
                    class_code_of(device->type()), kRevision),
      memory_(memory),
      queue_count_(clamp_queue_count(device->queue_count())),
      offered_features_(offered_features_of(*device)),
      config_size_(
          static_cast<uint32_t>(std::min<uint64_t>(device->config_size(), kDeviceConfigMax))),
      register_bar_size_(register_bar_size_for(queue_count_)),
      msix_bar_size_(msix_bar_size_for(msix_vectors_for(queue_count_))),
      msix_(*this, msi_sink, msix_vectors_for(queue_count_), kMsixBar, 0,
            msix_pba_offset(msix_vectors_for(queue_count_))),
      queues_(queue_count_),
      device_(std::move(device)) {
  set_subsystem(kVendorId,
                static_cast<uint16_t>(kDeviceIdBase + static_cast<uint16_t>(device_->type())));
  set_interrupt_pin(1);  // INTA
  add_bar(kMsixBar, hw::PciBarKind::kMemory32, msix_bar_size_, msix_);
  add_bar(kRegisterBar, hw::PciBarKind::kMemory64, register_bar_size_, register_bar_);
  add_capabilities();
  std::lock_guard lock(state_mutex_);
  config_vector_ = kNoVector;
  for (uint16_t index = 0; index < queue_count_; ++index) {
    QueueConfig& queue = queues_[index];
    // A power of two no larger than the spec's maximum (2.7).
    const uint16_t wanted =
        std::clamp<uint16_t>(device_->queue_max_size(index), 1, Virtqueue::kMaxSize);
    queue.max_size = std::bit_floor(wanted);
    queue.size = queue.max_size;
    queue.msix_vector = kNoVector;
  }
}

VirtioPciFunction::~VirtioPciFunction() {
  std::unique_lock control(control_mutex_);
  device_->reset();
}

void VirtioPciFunction::add_capabilities() {
  auto add = [this](CapabilityType type, uint8_t length, uint8_t bar, uint32_t offset,
                    uint32_t size) -> uint8_t {
    const uint8_t at = add_capability(kCapabilityVendor, length);
    if (at == 0) return 0;
    set_config(at + 2, 1, length);  // cap_len
    set_config(at + kCapCfgType, 1, static_cast<uint8_t>(type));
    set_config(at + kCapBar, 1, bar);
    set_config(at + kCapOffset, 4, offset);
    set_config(at + kCapLength, 4, size);
    return at;
  };
  add(CapabilityType::kCommon, kCapSize, kRegisterBar, kCommonOffset, common::kSize);
  const uint8_t notify = add(CapabilityType::kNotify, kNotifyCapSize, kRegisterBar, kNotifyOffset,
                             std::max<uint32_t>(uint32_t{queue_count_} * kNotifyOffMultiplier, 2));
  if (notify != 0) set_config(notify + kNotifyCapMultiplier, 4, kNotifyOffMultiplier);
  add(CapabilityType::kIsr, kCapSize, kRegisterBar, kIsrOffset, 1);
  // Devices without configuration space (virtio-rng) have no device capability (4.1.4.6).
  if (config_size_ > 0) {
    add(CapabilityType::kDevice, kCapSize, kRegisterBar, kDeviceConfigOffset, config_size_);
  }
  // The PCI configuration access window (4.1.4.8): bar, offset, length and data are the
  // driver's to write.
  pci_config_capability_ = add(CapabilityType::kPciConfig, kPciCfgCapSize, 0, 0, 0);
  if (pci_config_capability_ != 0) {
    set_writable(pci_config_capability_ + kCapBar, 1, 0xff);
    set_writable(pci_config_capability_ + kCapOffset, 4, 0xffffffff);
    set_writable(pci_config_capability_ + kCapLength, 4, 0xffffffff);
    set_writable(pci_config_capability_ + kPciCfgCapData, 4, 0xffffffff);
  }
}

Virtqueue* VirtioPciFunction::queue(uint16_t index) {
  // No lock: a ring changes only under the exclusive control lock while the device is idle
  // (before activate() or after reset()), which is when the contract forbids calling this.
  if (index >= queue_count_ || !queues_[index].ring) return nullptr;
  return &*queues_[index].ring;
}

uint8_t VirtioPciFunction::device_status() const {
  std::lock_guard lock(state_mutex_);
  return status_;
}

uint8_t VirtioPciFunction::isr_status() const {
  std::lock_guard lock(state_mutex_);
  return isr_;
}

void VirtioPciFunction::update_intx_locked() {
  // PCI 3.0 section 6.8.2: a function with MSI-X enabled must not use INTx.
  set_intx(isr_ != 0 && !msix_.enabled());
}

void VirtioPciFunction::signal_queue(uint16_t index) {
  uint16_t vector = kNoVector;
  {
    std::lock_guard lock(state_mutex_);
    if (index >= queue_count_) return;
    vector = queues_[index].msix_vector;
  }
  // With MSI-X on, the queue's vector (none when unmapped); otherwise ISR bit 0 and INTx.
  if (vector != kNoVector ? msix_.notify(vector) : msix_.enabled()) return;
  std::lock_guard lock(state_mutex_);
  isr_ |= kIsrQueue;
  update_intx_locked();
}

void VirtioPciFunction::raise_config_interrupt() {
  uint16_t vector = kNoVector;
  {
    std::lock_guard lock(state_mutex_);
    // 4.1.4.5: the configuration bit is set before any configuration notification.
    isr_ |= kIsrConfig;
    vector = config_vector_;
    update_intx_locked();
  }
  if (vector != kNoVector) msix_.notify(vector);
}

void VirtioPciFunction::signal_config_change() {
  {
    std::lock_guard lock(state_mutex_);
    ++config_generation_;
  }
  raise_config_interrupt();
}

void VirtioPciFunction::device_error(std::string_view what) {
  if (log_limiter_.allow()) {
    log_warn("{}: {}; the device needs a reset (DEVICE_NEEDS_RESET)", name(), what);
  }
  {
    std::lock_guard lock(state_mutex_);
    if (status_ & status::kDeviceNeedsReset) return;  // the driver was told already
    status_ |= status::kDeviceNeedsReset;
  }
  raise_config_interrupt();
}

void VirtioPciFunction::reset() {
  std::unique_lock control(control_mutex_);
  reset_locked();
}

void VirtioPciFunction::reset_locked() {
  // The device first: it returns only once it no longer touches queues or memory.
  device_->reset();
  std::lock_guard lock(state_mutex_);
  status_ = 0;
  activated_ = false;
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  driver_features_ = 0;
  config_vector_ = kNoVector;
  queue_select_ = 0;
  isr_ = 0;
  for (QueueConfig& queue : queues_) {
    queue.size = queue.max_size;
    queue.msix_vector = kNoVector;
    queue.enabled = false;
    queue.descriptor_table = queue.driver_area = queue.device_area = 0;
    queue.ring.reset();
    queue.kicked_early = false;
  }
  update_intx_locked();
}

void VirtioPciFunction::activate_locked() {
  uint64_t features = 0;
  {
    std::lock_guard lock(state_mutex_);
    if (activated_) return;
    features = driver_features_;
  }
  if (auto activated = device_->activate(*this, features); !activated) {
    device_error(fmt::format("activation failed: {}", activated.error().message()));
    return;
  }
  std::vector<uint16_t> early;
  {
    std::lock_guard lock(state_mutex_);
    activated_ = true;
    for (uint16_t index = 0; index < queue_count_; ++index) {
      if (queues_[index].kicked_early && queues_[index].enabled) early.push_back(index);
      queues_[index].kicked_early = false;
    }
  }
  // Some drivers add buffers and kick while probing, before DRIVER_OK (2.1.2: the device must
  // not consume them earlier); those kicks are delivered now.
  for (uint16_t index : early) device_->queue_notify(index);
}

void VirtioPciFunction::enable_queue_locked(uint16_t index) {
  VirtqueueLayout layout;
  uint64_t features = 0;
  {
    std::lock_guard lock(state_mutex_);
    if (index >= queue_count_) return;
    const QueueConfig& queue = queues_[index];
    if (queue.enabled) return;
    layout = {queue.size, queue.descriptor_table, queue.driver_area, queue.device_area};
    features = driver_features_;
    if (queue.size > queue.max_size) {
      // Virtqueue::create checks the rest; the device's own limit is ours to check.
      layout.size = 0;
    }
  }
  if (layout.size == 0) {
    device_error(fmt::format("queue {}: size is 0 or above the maximum", index));
    return;
  }
  auto created = Virtqueue::create(memory_, layout, (features & kFeatureRingEventIndex) != 0,
                                   (features & kFeatureIndirectDescriptors) != 0);
  if (!created) {
    device_error(fmt::format("queue {}: {}", index, created.error().message()));
    return;
  }
  std::lock_guard lock(state_mutex_);
  queues_[index].ring.emplace(std::move(*created));
  queues_[index].enabled = true;
}

void VirtioPciFunction::config_written(uint16_t offset, unsigned size) {
  const unsigned data = pci_config_capability_ + kPciCfgCapData;
  if (pci_config_capability_ != 0 && size != 0 && offset < data + 4 && offset + size > data) {
    pci_config_window_write();
  }
  // MSI-X enable and Command.InterruptDisable decide whether the ISR drives INTx.
  std::lock_guard lock(state_mutex_);
  update_intx_locked();
}

}  // namespace lamina::virtio
