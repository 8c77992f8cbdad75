#pragma once
// PostCodePort: port 0x80, where firmware writes power-on self-test codes and Linux writes
// dummy bytes as an I/O delay. Writes are accepted and the last code kept for diagnostics;
// reads return all ones, as on boards without a POST card.
//
// Thread-safety: the last code is an atomic.

#include <atomic>

#include "base/byte_order.h"
#include "hw/device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class PostCodePort final : public Device, public Stateful {
 public:
  std::string_view name() const override { return "post-code"; }
  void read(uint64_t, std::span<std::byte> data) override { store_le_sized(data, ~0ull); }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    if (offset == 0 && !data.empty()) last_code_.store(static_cast<uint8_t>(data[0]));
  }
  uint8_t last_code() const { return last_code_.load(); }

  void save(StateWriter& writer) const override {
    writer.begin_section("post-code", 1);
    writer.put_u8(last_code_.load());
    writer.end_section();
  }
  [[nodiscard]] Result<void> load(StateReader& reader) override {
    auto version = reader.begin_section("post-code");
    if (!version) return fail(version.error());
    if (*version != 1) return fail(ErrorCode::kUnsupported, "post-code: unknown state version");
    auto code = reader.get_u8();
    if (!code) return fail(code.error());
    last_code_.store(*code);
    return reader.end_section();
  }

 private:
  std::atomic<uint8_t> last_code_{0};
};

}  // namespace lamina::hw
