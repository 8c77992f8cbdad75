#pragma once
// DebugExit: a port (conventionally 0xf4, size 4) that lets a test guest end the VM with a
// status, compatible with QEMU's isa-debug-exit: writing value N requests exit status
// (N << 1) | 1, so a guest can never produce status 0 and be mistaken for a clean poweroff.
// The write's width (1, 2 or 4 bytes) gives N; reads return all ones. The machine maps it
// only when asked (`lamina run --debug-exit`): otherwise any guest could pick the status.
//
// Ownership: owns the callback. Thread-safety: stateless; the callback runs on the writing
// vCPU's thread and must only request the exit (stop the VM through the run loop's queue).

#include <algorithm>
#include <functional>

#include "base/byte_order.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class DebugExit final : public Device, public Stateful {
 public:
  static constexpr uint64_t kPort = 0xf4;
  static constexpr uint64_t kSize = 4;

  explicit DebugExit(std::function<void(uint32_t status)> exit_request)
      : exit_request_(std::move(exit_request)) {}

  std::string_view name() const override { return "debug-exit"; }
  void read(uint64_t, std::span<std::byte> data) override { store_le_sized(data, ~0ull); }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    if (offset != 0 || data.empty() || !exit_request_) return;
    const auto value =
        static_cast<uint32_t>(load_le_sized(data.first(std::min<size_t>(data.size(), 4))));
    exit_request_((value << 1) | 1);
  }

  // Stateless: the section exists so a machine's device list saves uniformly.
  void save(StateWriter& writer) const override {
    writer.begin_section("debug-exit", 1);
    writer.end_section();
  }
  [[nodiscard]] Result<void> load(StateReader& reader) override {
    auto version = reader.begin_section("debug-exit");
    if (!version) return fail(version.error());
    return reader.end_section();
  }

 private:
  std::function<void(uint32_t)> exit_request_;
};

}  // namespace lamina::hw
