#include "virtio/virtio_tablet.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "virtio/queue_service.h"

namespace lamina::virtio {

namespace {

constexpr uint32_t kStateVersion = 1;

// struct virtio_input_config (5.8.2): select, subsel, size, 5 reserved bytes, a 128-byte union.
constexpr uint32_t kConfigSelect = 0;
constexpr uint32_t kConfigSubsel = 1;
constexpr uint32_t kConfigSize = 2;
constexpr uint32_t kConfigUnion = 8;
constexpr uint32_t kConfigBytes = 136;

// enum virtio_input_config_select.
constexpr uint8_t kSelectIdName = 0x01;
constexpr uint8_t kSelectIdSerial = 0x02;
constexpr uint8_t kSelectIdDevids = 0x03;
constexpr uint8_t kSelectEvBits = 0x11;
constexpr uint8_t kSelectAbsInfo = 0x12;

// Linux's input-event-codes.h, which virtio-input carries unchanged.
constexpr uint16_t kEvSyn = 0x00, kEvKey = 0x01, kEvRel = 0x02, kEvAbs = 0x03;
constexpr uint16_t kSynReport = 0;
constexpr uint16_t kBtnLeft = 0x110, kBtnRight = 0x111, kBtnMiddle = 0x112;
constexpr uint16_t kRelWheel = 0x08;
constexpr uint16_t kAbsX = 0x00, kAbsY = 0x01;
constexpr uint16_t kBusVirtual = 0x06;

constexpr std::string_view kName = "Lamina tablet";
constexpr std::string_view kSerial = "lamina-tablet";

constexpr uint32_t kEventBytes = 8;

uint32_t scale(uint32_t position, uint32_t extent) {
  if (extent <= 1) return 0;
  const uint64_t clamped = std::min(position, extent - 1);
  return static_cast<uint32_t>(clamped * VirtioTablet::kAbsMax / (extent - 1));
}

}  // namespace

uint32_t VirtioTablet::config_size() const { return kConfigBytes; }

void VirtioTablet::read_config(uint32_t offset, std::span<std::byte> data) {
  std::lock_guard lock(mutex_);
  std::copy_n(config_.begin() + offset, data.size(), data.begin());
}

void VirtioTablet::write_config(uint32_t offset, std::span<const std::byte> data) {
  std::lock_guard lock(mutex_);
  // Only select and subsel are the driver's (5.8.2); the rest is read-only.
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset + i == kConfigSelect) select_ = static_cast<uint8_t>(data[i]);
    if (offset + i == kConfigSubsel) subsel_ = static_cast<uint8_t>(data[i]);
  }
  fill_config_locked();
}

void VirtioTablet::fill_config_locked() {
  config_.fill(std::byte{0});
  config_[kConfigSelect] = std::byte{select_};
  config_[kConfigSubsel] = std::byte{subsel_};
  std::byte* out = config_.data() + kConfigUnion;
  uint8_t size = 0;
  auto set_bit = [&](unsigned bit) {
    out[bit / 8] |= std::byte{static_cast<uint8_t>(1u << (bit % 8))};
    size = std::max<uint8_t>(size, static_cast<uint8_t>(bit / 8 + 1));
  };
  auto set_string = [&](std::string_view text) {
    std::memcpy(out, text.data(), text.size());
    size = static_cast<uint8_t>(text.size());
  };
  switch (select_) {
    case kSelectIdName: set_string(kName); break;
    case kSelectIdSerial: set_string(kSerial); break;
    case kSelectIdDevids:
      store_le<uint16_t>(out, kBusVirtual);
      store_le<uint16_t>(out + 2, 0);       // vendor
      store_le<uint16_t>(out + 4, 0x0003);  // product: a tablet
      store_le<uint16_t>(out + 6, 1);       // version
      size = 8;
      break;
    case kSelectEvBits:
      if (subsel_ == kEvKey) {
        for (uint16_t code : {kBtnLeft, kBtnRight, kBtnMiddle}) set_bit(code);
      } else if (subsel_ == kEvRel) {
        set_bit(kRelWheel);
      } else if (subsel_ == kEvAbs) {
        set_bit(kAbsX);
        set_bit(kAbsY);
      }
      break;
    case kSelectAbsInfo:
      if (subsel_ == kAbsX || subsel_ == kAbsY) {
        // struct virtio_input_absinfo: min, max, fuzz, flat, res.
        store_le<uint32_t>(out, 0);
        store_le<uint32_t>(out + 4, kAbsMax);
        size = 20;
      }
      break;
    default: break;  // unset or unknown: size 0 says "nothing here"
  }
  config_[kConfigSize] = std::byte{size};
}

Result<void> VirtioTablet::activate(VirtioTransport& transport, uint64_t /*features*/) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  broken_ = false;
  return {};
}

void VirtioTablet::reset() {
  std::lock_guard lock(mutex_);
  transport_ = nullptr;
  broken_ = false;
  buffers_seen_ = false;
  select_ = subsel_ = 0;
  fill_config_locked();
  pending_.clear();
  last_x_ = last_y_ = UINT32_MAX;
  last_buttons_ = 0;
}

void VirtioTablet::pause_io() {
  std::lock_guard lock(mutex_);
  paused_ = true;
}

void VirtioTablet::resume_io() {
  std::lock_guard lock(mutex_);
  paused_ = false;
  deliver_locked();
}

void VirtioTablet::queue_notify(uint16_t index) {
  std::lock_guard lock(mutex_);
  if (transport_ == nullptr || broken_) return;
  if (index == 0) {
    buffers_seen_ = true;
    deliver_locked();
  } else if (index == 1) {
    drain_status_locked();
  }
}

bool VirtioTablet::driver_ready() const {
  std::lock_guard lock(mutex_);
  return transport_ != nullptr && !broken_ && buffers_seen_;
}

uint64_t VirtioTablet::events_delivered() const {
  std::lock_guard lock(mutex_);
  return events_delivered_;
}

void VirtioTablet::post_pointer(uint32_t x, uint32_t y, uint32_t width, uint32_t height,
                                uint8_t buttons, int wheel) {
  std::lock_guard lock(mutex_);
  std::vector<InputEvent> report;
  const uint32_t abs_x = scale(x, width), abs_y = scale(y, height);
  if (abs_x != last_x_) report.push_back({kEvAbs, kAbsX, abs_x});
  if (abs_y != last_y_) report.push_back({kEvAbs, kAbsY, abs_y});
  static constexpr std::pair<uint8_t, uint16_t> kButtons[] = {
      {kButtonLeft, kBtnLeft}, {kButtonRight, kBtnRight}, {kButtonMiddle, kBtnMiddle}};
  for (auto [bit, code] : kButtons) {
    if ((buttons ^ last_buttons_) & bit) report.push_back({kEvKey, code, (buttons & bit) ? 1u : 0u});
  }
  if (wheel != 0) report.push_back({kEvRel, kRelWheel, static_cast<uint32_t>(wheel)});
  if (report.empty()) return;
  report.push_back({kEvSyn, kSynReport, 0});
  last_x_ = abs_x;
  last_y_ = abs_y;
  last_buttons_ = buttons;
  // Bounded: whole reports are dropped from the front, so the guest never sees half of one.
  while (!pending_.empty() && pending_.size() + report.size() > kMaxPendingEvents) {
    // Drop up to and including the end of the oldest report.
    while (!pending_.empty()) {
      const bool end_of_report = pending_.front().type == kEvSyn;
      pending_.pop_front();
      if (end_of_report) break;
    }
  }
  pending_.insert(pending_.end(), report.begin(), report.end());
  deliver_locked();
}

void VirtioTablet::deliver_locked() {
  if (transport_ == nullptr || broken_ || paused_ || pending_.empty()) return;
  // One event per buffer; what finds no buffer now waits for the next kick.
  auto served = serve_queue(*transport_, 0, [this] { return !pending_.empty(); },
                            [this](Virtqueue& queue, const DescriptorChain& chain) -> Result<uint32_t> {
                              if (chain.writable_length < kEventBytes) {
                                return fail(ErrorCode::kGuestFatal,
                                            fmt::format("virtio-tablet: an event buffer of {} bytes "
                                                        "(5.8.6.1 wants 8)",
                                                        chain.writable_length));
                              }
                              std::array<std::byte, kEventBytes> bytes{};
                              const InputEvent& event = pending_.front();
                              store_le<uint16_t>(bytes.data(), event.type);
                              store_le<uint16_t>(bytes.data() + 2, event.code);
                              store_le<uint32_t>(bytes.data() + 4, event.value);
                              const size_t copied = queue.copy_to(chain, 0, bytes);
                              pending_.pop_front();
                              ++events_delivered_;
                              return static_cast<uint32_t>(copied);
                            });
  if (!served) fail_locked(served.error());
}

void VirtioTablet::drain_status_locked() {
  // LED and similar events mean nothing to a tablet: each buffer goes back unread.
  auto served = serve_queue(*transport_, 1, [] { return true; },
                            [](Virtqueue&, const DescriptorChain&) -> Result<uint32_t> { return 0; });
  if (!served) fail_locked(served.error());
}

void VirtioTablet::fail_locked(const Error& error) {
  broken_ = true;
  transport_->device_error(error.message());
}

void VirtioTablet::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("virtio-tablet", kStateVersion);
  writer.put(select_, subsel_, buffers_seen_, last_x_, last_y_, last_buttons_);
  writer.put_u32(static_cast<uint32_t>(pending_.size()));
  for (const InputEvent& event : pending_) writer.put(event.type, event.code, event.value);
  writer.end_section();
}

Result<void> VirtioTablet::load(StateReader& reader) {
  auto version = reader.begin_section("virtio-tablet");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("virtio-tablet: saved state version {} is not supported", *version));
  }
  auto select = reader.get_u8();
  auto subsel = reader.get_u8();
  auto seen = reader.get_u8();
  auto x = reader.get_u32();
  auto y = reader.get_u32();
  auto buttons = reader.get_u8();
  auto count = reader.get_u32();
  if (!select || !subsel || !seen || !x || !y || !buttons || !count) {
    return fail(ErrorCode::kCorrupt, "virtio-tablet: truncated state");
  }
  if (*count > kMaxPendingEvents) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("virtio-tablet: {} pending events in the state (at most {})", *count,
                            kMaxPendingEvents));
  }
  std::deque<InputEvent> pending;
  for (uint32_t i = 0; i < *count; ++i) {
    auto type = reader.get_u16();
    auto code = reader.get_u16();
    auto value = reader.get_u32();
    if (!type || !code || !value) return fail(ErrorCode::kCorrupt, "virtio-tablet: truncated state");
    pending.push_back({*type, *code, *value});
  }
  if (auto ended = reader.end_section(); !ended) return ended;
  std::lock_guard lock(mutex_);
  select_ = *select;
  subsel_ = *subsel;
  buffers_seen_ = *seen != 0;
  last_x_ = *x;
  last_y_ = *y;
  last_buttons_ = *buttons;
  pending_ = std::move(pending);
  fill_config_locked();
  return {};
}

}  // namespace lamina::virtio
