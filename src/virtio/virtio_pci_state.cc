// save()/load() of VirtioPciFunction: the PCI function (config space, MSI-X), the transport's
// registers and queues, then the device (virtio_device.h's order). A loaded stream is hostile
// until checked: every value is validated before it reaches a register, queues are re-created
// through Virtqueue::create (which checks the layout against guest RAM), and a stream that
// fails leaves the function reset.

#include <fmt/format.h>

#include "virtio/virtio_pci.h"
#include "virtio/virtio_pci_layout.h"

namespace lamina::virtio {

using namespace pci;

namespace {
constexpr uint32_t kStateVersion = 1;
constexpr uint8_t kKnownStatus = status::kAcknowledge | status::kDriver | status::kDriverOk |
                                 status::kFeaturesOk | status::kDeviceNeedsReset | status::kFailed;
}  // namespace

void VirtioPciFunction::save(StateWriter& writer) const {
  std::unique_lock control(control_mutex_);
  writer.begin_section("virtio-pci", kStateVersion);
  hw::PciDevice::save(writer);
  msix_.save(writer);
  {
    std::lock_guard lock(state_mutex_);
    writer.put(queue_count_, status_, activated_, device_feature_select_, driver_feature_select_,
               driver_features_, config_vector_, queue_select_, config_generation_, isr_);
    for (const QueueConfig& queue : queues_) {
      writer.put(queue.size, queue.msix_vector, queue.enabled, queue.descriptor_table,
                 queue.driver_area, queue.device_area, queue.kicked_early);
      if (queue.ring) queue.ring->save(writer);
    }
  }
  device_->save(writer);
  writer.end_section();
}

Result<void> VirtioPciFunction::load(StateReader& reader) {
  std::unique_lock control(control_mutex_);
  // Quiesce and clear first: the device stops, and a failed load leaves a reset function.
  reset_locked();
  auto fail_reset = [this](Error error) -> Result<void> {
    reset_locked();
    return fail(error.with_context(name()));
  };
  auto version = reader.begin_section("virtio-pci");
  if (!version) return fail_reset(version.error());
  if (*version != kStateVersion) {
    return fail_reset(Error(ErrorCode::kUnsupported,
                            fmt::format("saved state version {} is not supported", *version)));
  }
  if (auto loaded = hw::PciDevice::load(reader); !loaded) return fail_reset(loaded.error());
  if (auto loaded = msix_.load(reader); !loaded) return fail_reset(loaded.error());

  uint16_t queue_count = 0;
  uint8_t status = 0, config_generation = 0, isr = 0;
  bool activated = false;
  uint32_t device_select = 0, driver_select = 0;
  uint64_t driver_features = 0;
  uint16_t config_vector = 0, queue_select = 0;
  if (auto got = reader.get(queue_count, status, activated, device_select, driver_select,
                            driver_features, config_vector, queue_select, config_generation, isr);
      !got) {
    return fail_reset(got.error());
  }
  auto corrupt = [&](std::string what) {
    return fail_reset(Error(ErrorCode::kCorrupt, "saved state: " + what));
  };
  if (queue_count != queue_count_) {
    return corrupt(fmt::format("{} queues, this device has {}", queue_count, queue_count_));
  }
  const bool features_ok = (status & status::kFeaturesOk) != 0;
  if ((status & ~kKnownStatus) != 0 || (isr & ~(kIsrQueue | kIsrConfig)) != 0 ||
      (activated && !(status & status::kDriverOk)) ||
      ((status & status::kDriverOk) && !features_ok) ||
      (features_ok &&
       ((driver_features & ~offered_features_) != 0 || !(driver_features & kFeatureVersion1)))) {
    return corrupt(fmt::format("status {:#x}, ISR {:#x} or features {:#x} are inconsistent", status,
                               isr, driver_features));
  }
  const auto valid_vector = [this](uint16_t vector) {
    return vector == kNoVector || vector < msix_.vectors();
  };
  if (!valid_vector(config_vector)) return corrupt("configuration vector out of range");

  std::vector<QueueConfig> queues(queue_count_);
  for (uint16_t index = 0; index < queue_count_; ++index) {
    QueueConfig& queue = queues[index];
    queue.max_size = queues_[index].max_size;
    if (auto got = reader.get(queue.size, queue.msix_vector, queue.enabled, queue.descriptor_table,
                              queue.driver_area, queue.device_area, queue.kicked_early);
        !got) {
      return fail_reset(got.error());
    }
    if (!valid_vector(queue.msix_vector)) {
      return corrupt(fmt::format("queue {} vector out of range", index));
    }
    if (!queue.enabled) continue;
    if (!features_ok || queue.size == 0 || queue.size > queue.max_size) {
      return corrupt(fmt::format("queue {} is enabled with size {}", index, queue.size));
    }
    auto ring = Virtqueue::create(
        memory_, {queue.size, queue.descriptor_table, queue.driver_area, queue.device_area},
        (driver_features & kFeatureRingEventIndex) != 0,
        (driver_features & kFeatureIndirectDescriptors) != 0);
    if (!ring) return fail_reset(ring.error().with_context(fmt::format("queue {}", index)));
    if (auto loaded = ring->load(reader); !loaded) {
      return fail_reset(loaded.error().with_context(fmt::format("queue {}", index)));
    }
    queue.ring.emplace(std::move(*ring));
  }
  if (auto loaded = device_->load(reader); !loaded) return fail_reset(loaded.error());
  if (auto left = reader.end_section(); !left) return fail_reset(left.error());

  {
    std::lock_guard lock(state_mutex_);
    status_ = status;
    activated_ = false;
    device_feature_select_ = device_select;
    driver_feature_select_ = driver_select;
    driver_features_ = driver_features;
    config_vector_ = config_vector;
    queue_select_ = queue_select;
    config_generation_ = config_generation;
    isr_ = isr;
    queues_ = std::move(queues);
    update_intx_locked();
  }
  // A running device runs again with the saved features (virtio_device.h).
  if (activated && !(status & status::kDeviceNeedsReset)) activate_locked();
  return {};
}

}  // namespace lamina::virtio
