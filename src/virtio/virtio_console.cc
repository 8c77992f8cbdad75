#include "virtio/virtio_console.h"

#include <algorithm>
#include <array>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "virtio/queue_service.h"

namespace lamina::virtio {

namespace {
constexpr uint32_t kStateVersion = 1;
constexpr size_t kChunk = 4096;
}  // namespace

VirtioConsole::VirtioConsole(ConsoleBackend& backend) : backend_(backend) {
  backend_.set_listener(this);
}

VirtioConsole::~VirtioConsole() { backend_.set_listener(nullptr); }

void VirtioConsole::read_config(uint32_t offset, std::span<std::byte> data) {
  // cols/rows (without F_SIZE), max_nr_ports (without MULTIPORT) and the write-only emerg_wr
  // all read as 0.
  (void)offset;
  store_le_sized(data, 0);
}

void VirtioConsole::write_config(uint32_t offset, std::span<const std::byte> data) {
  // 5.3.4: a write to emerg_wr outputs its low byte.
  if (offset == kEmergencyWriteOffset && data.size() == 4) backend_.write(data.first(1));
}

Result<void> VirtioConsole::activate(VirtioTransport& transport, uint64_t /*features*/) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  broken_ = false;
  // Input may have waited for the driver.
  receive_locked();
  return {};
}

void VirtioConsole::reset() {
  std::lock_guard lock(mutex_);
  transport_ = nullptr;
  broken_ = false;
}

void VirtioConsole::queue_notify(uint16_t index) {
  std::lock_guard lock(mutex_);
  if (index == kReceiveQueue) receive_locked();
  if (index == kTransmitQueue) transmit_locked();
}

void VirtioConsole::input_available() {
  std::lock_guard lock(mutex_);
  if (!io_paused_) receive_locked();
}

void VirtioConsole::output_space() {
  std::lock_guard lock(mutex_);
  if (!io_paused_) transmit_locked();
}

void VirtioConsole::pause_io() {
  std::lock_guard lock(mutex_);
  io_paused_ = true;
}

void VirtioConsole::resume_io() {
  std::lock_guard lock(mutex_);
  io_paused_ = false;
  // Input or output room that arrived meanwhile was not served.
  receive_locked();
  transmit_locked();
}

void VirtioConsole::fail_locked(const Error& error) {
  broken_ = true;
  transport_->device_error(error.message());
}

void VirtioConsole::receive_locked() {
  if (transport_ == nullptr || broken_) return;
  std::array<std::byte, kChunk> buffer;
  auto served = serve_queue(
      *transport_, kReceiveQueue, [this] { return backend_.input_pending() > 0; },
      [&](Virtqueue& queue, const DescriptorChain& chain) -> Result<uint32_t> {
        // Only this device reads the backend, so pending input cannot shrink under it.
        const size_t wanted = std::min<uint64_t>(chain.writable_length, buffer.size());
        const size_t got = backend_.read(std::span(buffer).first(wanted));
        return static_cast<uint32_t>(queue.copy_to(chain, 0, std::span(buffer).first(got)));
      });
  if (!served) fail_locked(served.error());
}

void VirtioConsole::transmit_locked() {
  if (transport_ == nullptr || broken_) return;
  std::array<std::byte, kChunk> buffer;
  auto served = serve_queue(
      *transport_, kTransmitQueue, [this] { return backend_.output_ready(); },
      [&](Virtqueue& queue, const DescriptorChain& chain) -> Result<uint32_t> {
        const uint64_t length = std::min<uint64_t>(chain.readable_length, kMaxTransmitBytes);
        for (uint64_t offset = 0; offset < length;) {
          const size_t piece = std::min<uint64_t>(buffer.size(), length - offset);
          const size_t got = queue.copy_from(chain, offset, std::span(buffer).first(piece));
          if (got == 0) break;
          backend_.write(std::span<const std::byte>(buffer).first(got));
          offset += got;
        }
        // The used length counts bytes the device wrote into the chain: none for output.
        return 0u;
      });
  if (!served) fail_locked(served.error());
}

void VirtioConsole::save(StateWriter& writer) const {
  writer.begin_section("virtio-console", kStateVersion);
  writer.end_section();
}

Result<void> VirtioConsole::load(StateReader& reader) {
  auto version = reader.begin_section("virtio-console");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("virtio-console: saved state version {} is not supported", *version));
  }
  return reader.end_section();
}

}  // namespace lamina::virtio
