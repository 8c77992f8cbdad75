#pragma once
// Port92: the PS/2 "system control port A" at 0x92 (fast A20 and fast reset), which SeaBIOS and
// boot loaders use instead of the slower i8042 path. Bit 1 gates A20; writing bit 0 as 1 resets
// the CPU (it reads back 0 afterwards). Other bits read 0.
//
// Ownership: owns the callbacks. Thread-safety: the register is atomic; callbacks run on the
// writing vCPU's thread without locks and must only request the change.

#include <atomic>
#include <functional>

#include "base/byte_order.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class Port92 final : public Device, public Stateful {
 public:
  Port92(std::function<void()> reset_request, std::function<void(bool enabled)> a20_changed,
         bool a20_enabled = true)
      : reset_request_(std::move(reset_request)),
        a20_changed_(std::move(a20_changed)),
        value_(a20_enabled ? 0x02 : 0x00) {}

  std::string_view name() const override { return "port92"; }
  void read(uint64_t offset, std::span<std::byte> data) override {
    store_le_sized(data, offset == 0 ? (0xffffffffffffff00ull | value_.load()) : ~0ull);
  }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    if (offset != 0 || data.empty()) return;
    const auto value = static_cast<uint8_t>(data[0]);
    const uint8_t previous = value_.exchange(value & 0x02);
    if (((previous ^ value) & 0x02) && a20_changed_) a20_changed_((value & 0x02) != 0);
    if ((value & 0x01) && reset_request_) reset_request_();
  }
  bool a20_enabled() const { return (value_.load() & 0x02) != 0; }

  void save(StateWriter& writer) const override {
    writer.begin_section("port92", 1);
    writer.put_u8(value_.load());
    writer.end_section();
  }
  [[nodiscard]] Result<void> load(StateReader& reader) override {
    auto version = reader.begin_section("port92");
    if (!version) return fail(version.error());
    auto value = reader.get_u8();
    if (!value) return fail(value.error());
    value_.store(*value & 0x02);
    return reader.end_section();
  }

 private:
  std::function<void()> reset_request_;
  std::function<void(bool)> a20_changed_;
  std::atomic<uint8_t> value_;
};

}  // namespace lamina::hw
