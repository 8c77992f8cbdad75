#pragma once
// ProbeDevice: a minimal VirtioDevice for transport tests. It records what the transport does
// to it (activation with features, notifications, resets, configuration accesses) in a
// ProbeLog the test owns, and can be told to fail activation.

#include <array>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "virtio/virtio_device.h"

namespace lamina::virtio::testing {

struct ProbeLog {
  std::mutex mutex;
  std::optional<uint64_t> activated_features;
  VirtioTransport* transport = nullptr;
  std::vector<uint16_t> notified;
  int activations = 0;
  int resets = 0;
  bool fail_activation = false;
  std::array<std::byte, 8> config{};
  uint32_t saved_marker = 0;  // what save() writes and load() restores
};

class ProbeDevice final : public VirtioDevice {
 public:
  static constexpr uint64_t kFeatures =
      (uint64_t{1} << 0) | (uint64_t{1} << 5) | (uint64_t{1} << 51);
  explicit ProbeDevice(ProbeLog& log) : log_(log) {}

  std::string_view name() const override { return "virtio-probe"; }
  DeviceType type() const override { return DeviceType::kNet; }
  // Bit 30 is a transport bit the transport must not pass through from the device.
  uint64_t device_features() const override { return kFeatures | (uint64_t{1} << 30); }
  uint16_t queue_count() const override { return 3; }
  uint16_t queue_max_size(uint16_t index) const override {
    return index == 0 ? 64 : index == 1 ? 100 : 256;
  }
  uint32_t config_size() const override { return 8; }
  void read_config(uint32_t offset, std::span<std::byte> data) override {
    std::lock_guard lock(log_.mutex);
    std::memcpy(data.data(), log_.config.data() + offset, data.size());
  }
  void write_config(uint32_t offset, std::span<const std::byte> data) override {
    std::lock_guard lock(log_.mutex);
    std::memcpy(log_.config.data() + offset, data.data(), data.size());
  }

  Result<void> activate(VirtioTransport& transport, uint64_t features) override {
    std::lock_guard lock(log_.mutex);
    ++log_.activations;
    if (log_.fail_activation) return fail(ErrorCode::kIo, "the probe refuses to start");
    log_.activated_features = features;
    log_.transport = &transport;
    return {};
  }
  void queue_notify(uint16_t index) override {
    std::lock_guard lock(log_.mutex);
    log_.notified.push_back(index);
  }
  void reset() override {
    std::lock_guard lock(log_.mutex);
    ++log_.resets;
    log_.transport = nullptr;
    log_.activated_features.reset();
  }

  void save(StateWriter& writer) const override {
    std::lock_guard lock(log_.mutex);
    writer.begin_section("virtio-probe", 1);
    writer.put(log_.saved_marker);
    writer.end_section();
  }
  Result<void> load(StateReader& reader) override {
    auto version = reader.begin_section("virtio-probe");
    if (!version) return fail(version.error());
    std::lock_guard lock(log_.mutex);
    if (auto got = reader.get(log_.saved_marker); !got) return got;
    return reader.end_section();
  }

 private:
  ProbeLog& log_;
};

}  // namespace lamina::virtio::testing
