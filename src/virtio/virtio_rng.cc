#include "virtio/virtio_rng.h"

#include <sys/random.h>
#include <array>
#include <cerrno>

#include <fmt/format.h>

#include "virtio/queue_service.h"

namespace lamina::virtio {

namespace {

constexpr uint32_t kStateVersion = 1;

// Fills `out` from the host's entropy pool; false only when the kernel refuses.
bool fill_random(std::span<std::byte> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t got = ::getrandom(out.data() + done, out.size() - done, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(got);
  }
  return true;
}

}  // namespace

Result<void> VirtioRng::activate(VirtioTransport& transport, uint64_t /*features*/) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  broken_ = false;
  return {};
}

void VirtioRng::reset() {
  std::lock_guard lock(mutex_);
  transport_ = nullptr;
  broken_ = false;
}

void VirtioRng::queue_notify(uint16_t index) {
  std::lock_guard lock(mutex_);
  if (index == 0 && transport_ != nullptr && !broken_) serve_locked();
}

void VirtioRng::serve_locked() {
  std::array<std::byte, 4096> block;
  auto served = serve_queue(*transport_, 0, [] { return true; },
                            [&](Virtqueue& queue, const DescriptorChain& chain) -> Result<uint32_t> {
    // 5.4.6.2: only device-writable buffers are filled; readable ones are ignored.
    const uint64_t wanted = std::min<uint64_t>(chain.writable_length, kMaxBytesPerRequest);
    uint64_t written = 0;
    while (written < wanted) {
      const auto piece = std::span(block).first(std::min<size_t>(block.size(), wanted - written));
      if (!fill_random(piece)) break;  // the used length tells the driver what it got
      const size_t copied = queue.copy_to(chain, written, piece);
      written += copied;
      if (copied < piece.size()) break;
    }
    bytes_served_ += written;
    return static_cast<uint32_t>(written);
  });
  if (!served) {
    broken_ = true;
    transport_->device_error(served.error().message());
  }
}

uint64_t VirtioRng::bytes_served() const {
  std::lock_guard lock(mutex_);
  return bytes_served_;
}

void VirtioRng::save(StateWriter& writer) const {
  writer.begin_section("virtio-rng", kStateVersion);
  writer.end_section();
}

Result<void> VirtioRng::load(StateReader& reader) {
  auto version = reader.begin_section("virtio-rng");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("virtio-rng: saved state version {} is not supported", *version));
  }
  return reader.end_section();
}

}  // namespace lamina::virtio
