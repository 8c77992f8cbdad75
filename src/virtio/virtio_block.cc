#include "virtio/virtio_block.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "base/byte_order.h"
#include "base/log.h"

namespace lamina::virtio {
namespace {

// Requests served between two interrupt decisions: enough to coalesce interrupts under load,
// few enough that the first completions of a deep queue are not held back long.
constexpr uint32_t kBatch = 32;

// Configuration space offsets (section 5.2.4, struct virtio_blk_config).
constexpr uint32_t kConfigCapacity = 0;
constexpr uint32_t kConfigSegMax = 12;
constexpr uint32_t kConfigBlockSize = 20;
constexpr uint32_t kConfigNumQueues = 34;
constexpr uint32_t kConfigMaxDiscardSectors = 36;
constexpr uint32_t kConfigMaxDiscardSegments = 40;
constexpr uint32_t kConfigDiscardAlignment = 44;
constexpr uint32_t kConfigMaxWriteZeroesSectors = 48;
constexpr uint32_t kConfigMaxWriteZeroesSegments = 52;
constexpr uint32_t kConfigWriteZeroesMayUnmap = 56;

constexpr uint32_t kStateVersion = 1;

}  // namespace

Result<void> check_block_serial(std::string_view serial) {
  if (serial.size() > kBlockIdLength) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("disk serial '{}' is {} bytes long; virtio-blk serials are at most {}",
                            serial, serial.size(), kBlockIdLength));
  }
  for (char c : serial) {
    if (c < 0x20 || c > 0x7e) {
      return fail(ErrorCode::kInvalidArgument,
                  "disk serials are printable ASCII (letters, digits, punctuation, spaces)");
    }
  }
  return {};
}

std::string derive_block_serial(const std::string& image_path) {
  std::error_code ignored;
  std::filesystem::path canonical = std::filesystem::weakly_canonical(image_path, ignored);
  const std::string name = canonical.empty() ? image_path : canonical.string();
  // FNV-1a, 64-bit: a stable spread of the path; 52 bits of it fill the 20 bytes.
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : name) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return fmt::format("lamina-{:013x}", hash & ((uint64_t{1} << 52) - 1));
}

Result<std::unique_ptr<VirtioBlock>> VirtioBlock::create(
    std::shared_ptr<storage::BlockDevice> disk, std::string serial) {
  if (!disk) return fail(ErrorCode::kInvalidArgument, "virtio-blk: no disk");
  if (auto valid = check_block_serial(serial); !valid) return fail(valid.error());
  auto wakeup = WakeupEvent::create("virtio-blk");
  if (!wakeup) return fail(wakeup.error());
  return std::unique_ptr<VirtioBlock>(
      new VirtioBlock(std::move(disk), std::move(serial), std::move(*wakeup)));
}

VirtioBlock::VirtioBlock(std::shared_ptr<storage::BlockDevice> disk, std::string serial,
                         WakeupEvent wakeup)
    : disk_(std::move(disk)),
      serial_(std::move(serial)),
      read_only_(disk_->read_only()),
      handler_(*disk_, make_id(serial_)),
      wakeup_(std::move(wakeup)) {
  build_config();
}

VirtioBlock::~VirtioBlock() {
  std::lock_guard control(control_mutex_);
  stop_worker();
}

BlockRequestHandler::Id VirtioBlock::make_id(std::string_view serial) {
  // Section 5.2.6: NUL-padded, no terminator when 20 bytes long.
  BlockRequestHandler::Id id{};
  std::memcpy(id.data(), serial.data(), std::min(serial.size(), id.size()));
  return id;
}

void VirtioBlock::build_config() {
  std::byte* config = config_.data();
  store_le<uint64_t>(config + kConfigCapacity, handler_.capacity_sectors());
  store_le<uint32_t>(config + kConfigSegMax, kBlockSegMax);
  store_le<uint32_t>(config + kConfigBlockSize, static_cast<uint32_t>(storage::kSectorSize));
  store_le<uint16_t>(config + kConfigNumQueues, 1);
  store_le<uint32_t>(config + kConfigMaxDiscardSectors, kBlockMaxDiscardSectors);
  store_le<uint32_t>(config + kConfigMaxDiscardSegments, kBlockMaxDiscardSegments);
  store_le<uint32_t>(config + kConfigDiscardAlignment, kBlockDiscardAlignment);
  store_le<uint32_t>(config + kConfigMaxWriteZeroesSectors, kBlockMaxWriteZeroesSectors);
  store_le<uint32_t>(config + kConfigMaxWriteZeroesSegments, kBlockMaxWriteZeroesSegments);
  // BlockDevice::write_zeroes may free the range when asked to unmap.
  config[kConfigWriteZeroesMayUnmap] = std::byte{1};
}

uint64_t VirtioBlock::device_features() const {
  uint64_t features = kBlockFeatureSegMax | kBlockFeatureBlockSize | kBlockFeatureFlush;
  if (read_only_) {
    features |= kBlockFeatureReadOnly;
  } else {
    features |= kBlockFeatureDiscard | kBlockFeatureWriteZeroes;
  }
  return features;
}

void VirtioBlock::read_config(uint32_t offset, std::span<std::byte> data) {
  // The transport checked the range; bytes past the layout read as zero all the same.
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = uint64_t{offset} + i;
    data[i] = at < config_.size() ? config_[at] : std::byte{0};
  }
}

Result<void> VirtioBlock::activate(VirtioTransport& transport, uint64_t features) {
  std::lock_guard control(control_mutex_);
  stop_worker();
  handler_.set_features(features & device_features());
  transport_ = &transport;
  {
    std::lock_guard state(state_mutex_);
    running_ = true;
    pending_ = true;  // the first pass serves whatever is already available (after load())
  }
  worker_ = std::jthread([this](std::stop_token stop) { run(std::move(stop)); });
  return {};
}

void VirtioBlock::queue_notify(uint16_t index) {
  if (index != 0) return;  // the only queue; the transport already refuses other indexes
  {
    std::lock_guard state(state_mutex_);
    if (!running_) return;
    pending_ = true;
  }
  wakeup_.signal();
}

void VirtioBlock::reset() {
  std::lock_guard control(control_mutex_);
  stop_worker();
}

void VirtioBlock::stop_worker() {
  if (worker_.joinable()) {
    worker_.request_stop();
    wakeup_.signal();
    if (worker_.get_id() == std::this_thread::get_id()) {
      // A reset from inside the I/O thread (a transport reacting to device_error synchronously)
      // cannot join itself; the thread returns as soon as this call unwinds.
      worker_.detach();
    } else {
      worker_.join();
    }
  }
  worker_ = std::jthread();
  transport_ = nullptr;
  handler_.set_features(0);
  std::lock_guard state(state_mutex_);
  running_ = false;
  pending_ = false;
  busy_ = false;
  idle_.notify_all();
}

void VirtioBlock::wait_idle() const {
  std::unique_lock state(state_mutex_);
  idle_.wait(state, [this] { return !running_ || (!pending_ && !busy_); });
}

void VirtioBlock::run(std::stop_token stop) {
  bool broken = false;
  for (;;) {
    {
      std::lock_guard state(state_mutex_);
      pending_ = false;
      busy_ = true;
    }
    if (!broken && !stop.stop_requested()) {
      if (Virtqueue* queue = transport_->queue(0)) broken = !drain(*queue, stop);
    }
    {
      std::lock_guard state(state_mutex_);
      busy_ = false;
      if (!pending_) idle_.notify_all();
    }
    if (stop.stop_requested()) return;
    wakeup_.wait();
    if (stop.stop_requested()) return;
  }
}

bool VirtioBlock::fatal(std::string_view what) {
  transport_->device_error(what);
  return false;
}

bool VirtioBlock::drain(Virtqueue& queue, const std::stop_token& stop) {
  // Section 2.7.10: no kicks while the thread is busy anyway; re-enabled before it sleeps.
  queue.set_notifications(false);
  const DmaMemory& memory = transport_->memory();
  for (;;) {
    uint32_t served = 0;
    bool empty = false;
    while (served < kBatch) {
      auto popped = queue.pop();
      if (!popped) return fatal(popped.error().message());
      if (!*popped) {
        empty = true;
        break;
      }
      const DescriptorChain& chain = **popped;
      auto used = handler_.handle(queue, memory, chain);
      if (!used) return fatal(used.error().message());
      if (auto pushed = queue.push(chain.head, *used); !pushed) {
        return fatal(pushed.error().message());
      }
      ++served;
    }
    if (served > 0 && queue.should_signal()) transport_->signal_queue(0);
    if (stop.stop_requested()) return true;
    if (empty) {
      // Closes the race with a driver that added buffers while kicks were off.
      queue.set_notifications(true);
      if (!queue.has_available()) return true;
      queue.set_notifications(false);
    }
  }
}

void VirtioBlock::save(StateWriter& writer) const {
  wait_idle();
  writer.begin_section("virtio-blk", kStateVersion);
  writer.put(handler_.capacity_sectors(), read_only_);
  writer.end_section();
}

Result<void> VirtioBlock::load(StateReader& reader) {
  auto version = reader.begin_section("virtio-blk");
  if (!version) return fail(version.error());
  if (*version != kStateVersion) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("virtio-blk state version {} is not known (this Lamina reads {})",
                            *version, kStateVersion));
  }
  uint64_t capacity = 0;
  bool read_only = false;
  if (auto got = reader.get(capacity, read_only); !got) return got;
  if (capacity != handler_.capacity_sectors() || read_only != read_only_) {
    return fail(ErrorCode::kInvalidArgument,
                fmt::format("virtio-blk: the saved disk had {} sectors{}, the attached disk has "
                            "{}{}; restore with the same disk",
                            capacity, read_only ? " (read-only)" : "",
                            handler_.capacity_sectors(), read_only_ ? " (read-only)" : ""));
  }
  if (auto left = reader.end_section(); !left) return left;
  // The transport activates the device again after load when the driver had set DRIVER_OK.
  reset();
  return {};
}

}  // namespace lamina::virtio
