#pragma once
// ResetControl: the chipset's reset control register at port 0xcf9 (PIIX4/ICH "RST_CNT"), also
// named as the FADT RESET_REG with value 0x06. Bit 1 (SYS_RST) selects a hard reset, bit 2
// (RST_CPU) going from 0 to 1 performs the reset; bit 3 (FULL_RST) is kept. Both kinds reach the
// same callback: the machine resets the whole VM.
//
// 0xcf9 lies inside the PCI CONFIG_ADDRESS dword (0xcf8-0xcfb), so the PCI host bridge, which
// owns that range, forwards byte accesses at 0xcf9 here.
//
// Ownership: owns the callback. Thread-safety: the register is atomic; the callback runs on the
// writing vCPU's thread and must only request the reset.

#include <atomic>
#include <functional>

#include "base/byte_order.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class ResetControl final : public Device, public Stateful {
 public:
  explicit ResetControl(std::function<void()> reset_request)
      : reset_request_(std::move(reset_request)) {}

  std::string_view name() const override { return "reset-control"; }
  void read(uint64_t offset, std::span<std::byte> data) override {
    store_le_sized(data, offset == 0 ? (0xffffffffffffff00ull | value_.load()) : ~0ull);
  }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    if (offset != 0 || data.empty()) return;
    const auto value = static_cast<uint8_t>(data[0]);
    const uint8_t previous = value_.exchange(value & 0x0a);  // RST_CPU does not stick
    if ((value & 0x04) && !(previous & 0x04) && reset_request_) reset_request_();
  }

  void save(StateWriter& writer) const override {
    writer.begin_section("reset-control", 1);
    writer.put_u8(value_.load());
    writer.end_section();
  }
  [[nodiscard]] Result<void> load(StateReader& reader) override {
    auto version = reader.begin_section("reset-control");
    if (!version) return fail(version.error());
    auto value = reader.get_u8();
    if (!value) return fail(value.error());
    value_.store(*value & 0x0a);
    return reader.end_section();
  }

 private:
  std::function<void()> reset_request_;
  std::atomic<uint8_t> value_{0};
};

}  // namespace lamina::hw
