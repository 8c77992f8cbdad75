#include "hw/system_control_port.h"

#include "base/byte_order.h"

namespace lamina::hw {

namespace {
constexpr uint64_t kRefreshPeriodNs = 15'085;
constexpr uint32_t kStateVersion = 1;
}  // namespace

void SystemControlPort::read(uint64_t offset, std::span<std::byte> data) {
  uint8_t value = 0xff;
  if (offset == 0) {
    value = control_.load() & 0x0f;
    if ((clock_.now_ns() / kRefreshPeriodNs) & 1) value |= 0x10;
    if (pit_.channel2_output()) value |= 0x20;
  }
  store_le_sized(data, 0xffffffffffffff00ull | value);
}

void SystemControlPort::write(uint64_t offset, std::span<const std::byte> data) {
  if (offset != 0 || data.empty()) return;
  const uint8_t value = static_cast<uint8_t>(data[0]) & 0x0f;
  control_.store(value);
  pit_.set_channel2_gate((value & 0x01) != 0);
}

void SystemControlPort::save(StateWriter& writer) const {
  writer.begin_section("port61", kStateVersion);
  writer.put_u8(control_.load());
  writer.end_section();
}

Result<void> SystemControlPort::load(StateReader& reader) {
  auto version = reader.begin_section("port61");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported, "port61: saved state version is not supported");
  }
  auto value = reader.get_u8();
  if (!value) return fail(value.error());
  // The PIT restores its own gate; only the latch bits live here.
  control_.store(*value & 0x0f);
  return reader.end_section();
}

}  // namespace lamina::hw
