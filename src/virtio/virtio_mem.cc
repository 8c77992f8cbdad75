#include "virtio/virtio_mem.h"

#include <array>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "virtio/queue_service.h"

namespace lamina::virtio {

namespace {
constexpr uint32_t kStateVersion = 1;
// struct virtio_mem_req: le16 type, 3 x le16 padding, le64 addr, le16 nb_blocks, padding.
constexpr size_t kRequestSize = 24;
// struct virtio_mem_resp: le16 type, 3 x le16 padding, le16 state.
constexpr size_t kResponseSize = 10;
}  // namespace

VirtioMem::VirtioMem(uint64_t base, uint64_t size, Discard discard)
    : base_(base), size_(size), discard_(std::move(discard)), plugged_(size / kBlockSize) {}

void VirtioMem::read_config(uint32_t offset, std::span<std::byte> data) {
  std::array<std::byte, kConfigSize> config{};
  {
    std::lock_guard lock(mutex_);
    // struct virtio_mem_config (5.15.4): block_size, node_id + padding, addr, region_size,
    // usable_region_size, plugged_size, requested_size.
    store_le<uint64_t>(config.data() + 0, kBlockSize);
    store_le<uint64_t>(config.data() + 16, base_);
    store_le<uint64_t>(config.data() + 24, size_);
    store_le<uint64_t>(config.data() + 32, size_);
    store_le<uint64_t>(config.data() + 40, plugged_blocks_ * kBlockSize);
    store_le<uint64_t>(config.data() + 48, requested_);
  }
  for (size_t i = 0; i < data.size() && offset + i < config.size(); ++i) {
    data[i] = config[offset + i];
  }
}

Result<void> VirtioMem::activate(VirtioTransport& transport, uint64_t /*features*/) {
  std::lock_guard lock(mutex_);
  transport_ = &transport;
  broken_ = false;
  return {};
}

void VirtioMem::reset() {
  // Plugged memory stays plugged across a driver reset (5.15.5: a new driver unplugs all).
  std::lock_guard lock(mutex_);
  transport_ = nullptr;
  broken_ = false;
}

Result<void> VirtioMem::set_requested_size(uint64_t bytes) {
  VirtioTransport* transport = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (bytes % kBlockSize != 0 || bytes > size_) {
      return fail(ErrorCode::kInvalidArgument,
                  fmt::format("virtio-mem: {} MiB is not whole {} MiB blocks up to the region's "
                              "{} MiB",
                              bytes >> 20, kBlockSize >> 20, size_ >> 20));
    }
    requested_ = bytes;
    transport = transport_;
  }
  if (transport != nullptr) transport->signal_config_change();
  return {};
}

uint64_t VirtioMem::requested_size() const {
  std::lock_guard lock(mutex_);
  return requested_;
}

uint64_t VirtioMem::plugged_size() const {
  std::lock_guard lock(mutex_);
  return plugged_blocks_ * kBlockSize;
}

VirtioMem::Response VirtioMem::state_of(uint64_t address, uint64_t blocks) const {
  const uint64_t first = (address - base_) / kBlockSize;
  uint64_t plugged = 0;
  for (uint64_t block = first; block < first + blocks; ++block) plugged += plugged_[block];
  return {kAck, plugged == blocks ? kPlugged : plugged == 0 ? kUnplugged : kMixed};
}

VirtioMem::Response VirtioMem::plug(uint64_t address, uint64_t blocks, bool plug) {
  const uint64_t first = (address - base_) / kBlockSize;
  // 5.15.6.2-3: every block must be in the other state first.
  if (state_of(address, blocks).state != (plug ? kUnplugged : kPlugged)) return {kError};
  if (plug && (plugged_blocks_ + blocks) * kBlockSize > requested_) return {kNack};
  for (uint64_t block = first; block < first + blocks; ++block) plugged_[block] = plug;
  if (plug) {
    plugged_blocks_ += blocks;
  } else {
    plugged_blocks_ -= blocks;
    if (discard_) discard_(address, blocks * kBlockSize);
  }
  return {kAck};
}

VirtioMem::Response VirtioMem::handle(std::span<const std::byte> request) {
  const uint16_t type = load_le<uint16_t>(request.data());
  if (type == kUnplugAll) {
    for (uint64_t block = 0; block < plugged_.size(); ++block) {
      if (plugged_[block] && discard_) discard_(base_ + block * kBlockSize, kBlockSize);
      plugged_[block] = false;
    }
    plugged_blocks_ = 0;
    return {kAck};
  }
  const uint64_t address = load_le<uint64_t>(request.data() + 8);
  const uint64_t blocks = load_le<uint16_t>(request.data() + 16);
  // The range must be whole blocks inside the usable region (checked without overflow).
  if (blocks == 0 || address < base_ || (address - base_) % kBlockSize != 0 ||
      (address - base_) / kBlockSize > plugged_.size() ||
      blocks > plugged_.size() - (address - base_) / kBlockSize) {
    return {kError};
  }
  switch (type) {
    case kPlug: return plug(address, blocks, true);
    case kUnplug: return plug(address, blocks, false);
    case kState: return state_of(address, blocks);
    default: return {kError};
  }
}

void VirtioMem::queue_notify(uint16_t index) {
  std::lock_guard lock(mutex_);
  if (index == 0 && transport_ != nullptr && !broken_) serve_locked();
}

void VirtioMem::serve_locked() {
  auto served = serve_queue(*transport_, 0, [] { return true; },
                            [this](Virtqueue& queue, const DescriptorChain& chain) -> Result<uint32_t> {
    if (chain.writable_length < kResponseSize) {
      return fail(ErrorCode::kGuestFatal, "virtio-mem: a request without room for its response");
    }
    std::array<std::byte, kRequestSize> request{};
    const Response response = queue.copy_from(chain, 0, request) == request.size()
                                  ? handle(request)
                                  : Response{kError};
    std::array<std::byte, kResponseSize> reply{};
    store_le<uint16_t>(reply.data(), response.type);
    store_le<uint16_t>(reply.data() + 8, response.state);
    return static_cast<uint32_t>(queue.copy_to(chain, 0, reply));
  });
  if (!served) {
    broken_ = true;
    transport_->device_error(served.error().message());
  }
}

void VirtioMem::save(StateWriter& writer) const {
  std::lock_guard lock(mutex_);
  writer.begin_section("virtio-mem", kStateVersion);
  writer.put(base_, size_, requested_);
  std::vector<std::byte> bits((plugged_.size() + 7) / 8);
  for (size_t block = 0; block < plugged_.size(); ++block) {
    if (plugged_[block]) bits[block / 8] |= std::byte{static_cast<uint8_t>(1u << (block % 8))};
  }
  writer.put_bytes(bits);
  writer.end_section();
}

Result<void> VirtioMem::load(StateReader& reader) {
  auto version = reader.begin_section("virtio-mem");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("virtio-mem: saved state version {} is not supported", *version));
  }
  uint64_t base = 0, size = 0, requested = 0;
  if (auto result = reader.get(base, size, requested); !result) return result;
  if (base != base_ || size != size_ || requested > size_ || requested % kBlockSize != 0) {
    return fail(ErrorCode::kInvalidArgument,
                "virtio-mem: the saved region differs from this machine's");
  }
  std::vector<std::byte> bits((plugged_.size() + 7) / 8);
  if (auto result = reader.get_bytes(bits); !result) return result;
  std::lock_guard lock(mutex_);
  requested_ = requested;
  plugged_blocks_ = 0;
  for (size_t block = 0; block < plugged_.size(); ++block) {
    plugged_[block] = (std::to_integer<uint8_t>(bits[block / 8]) >> (block % 8)) & 1;
    plugged_blocks_ += plugged_[block];
  }
  return reader.end_section();
}

}  // namespace lamina::virtio
