#include "virtio_block_fuzz_input.h"

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <vector>

#include "base/guest_memory.h"
#include "storage/image_format.h"
#include "virtio/dma_memory.h"
#include "virtio/virtio_device.h"

namespace lamina::virtio::test {
namespace {

// Chains served per input: more than the queue holds, so index wrap-around is reached.
constexpr uint32_t kMaxChains = 40;

std::vector<std::byte> disk_content(storage::BlockDevice& disk) {
  std::vector<std::byte> bytes(disk.size());
  if (!disk.read(0, bytes)) bytes.clear();
  return bytes;
}

}  // namespace

BlockFuzzHarness::BlockFuzzHarness(const std::string& folder) {
  const std::string path = folder + "/fuzz-disk.raw";
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const bool sized = ::ftruncate(fd, static_cast<off_t>(kFuzzDiskSize)) == 0;
  ::close(fd);
  if (!sized) return;
  if (auto opened = storage::open_image(path, true)) writable_ = std::move(*opened);
  // The same file read-only beside the writer: without a lock (--force-share).
  if (auto opened = storage::open_image(path, false, {.force_share = true, .references = {}})) read_only_ = std::move(*opened);
}

BlockFuzzHarness::~BlockFuzzHarness() = default;

FuzzOutcome BlockFuzzHarness::run(std::span<const uint8_t> input) {
  FuzzOutcome outcome;
  if (input.empty() || !ready()) return outcome;
  const uint8_t flags = input[0];
  input = input.subspan(1);

  auto memory = GuestMemory::create({RamRegion{0, kFuzzRamSize}});
  if (!memory) return outcome;
  const size_t image = std::min<size_t>(input.size(), kFuzzRamSize);
  std::memcpy(memory->host_pointer(0, kFuzzRamSize), input.data(), image);
  DmaMemory dma(*memory);

  auto queue = Virtqueue::create(dma, kFuzzLayout, (flags & kFuzzEventIndex) != 0,
                                 (flags & kFuzzIndirect) != 0);
  if (!queue) {
    outcome.violation = "the fixed queue layout was refused: " + queue.error().message();
    return outcome;
  }
  const bool read_only = (flags & kFuzzReadOnly) != 0;
  storage::BlockDevice& disk = read_only ? *read_only_ : *writable_;
  uint64_t features = kFeatureVersion1;
  if ((flags & kFuzzFlush) != 0) features |= kBlockFeatureFlush;
  if (!read_only && (flags & kFuzzDiscard) != 0) features |= kBlockFeatureDiscard;
  if (!read_only && (flags & kFuzzWriteZeroes) != 0) features |= kBlockFeatureWriteZeroes;
  BlockRequestHandler::Id id{};
  std::memcpy(id.data(), "fuzz-serial", 11);
  BlockRequestHandler handler(disk, id);
  handler.set_features(features);
  const std::vector<std::byte> before = read_only ? disk_content(disk) : std::vector<std::byte>();

  queue->set_notifications(false);
  for (uint32_t served = 0; served < kMaxChains; ++served) {
    auto popped = queue->pop();
    if (!popped) {
      outcome.device_error = true;
      break;
    }
    if (!*popped) break;
    const DescriptorChain& chain = **popped;
    auto used = handler.handle(*queue, dma, chain);
    if (!used) {
      if (chain.writable_length != 0) {
        outcome.violation = "a request with a writable byte failed: " + used.error().message();
      }
      outcome.device_error = true;
      break;
    }
    if (*used > chain.writable_length) {
      outcome.violation = fmt::format("used length {} exceeds the {} writable bytes", *used,
                                      chain.writable_length);
      break;
    }
    // The status byte is the chain's last writable byte (section 5.2.6).
    const GuestBuffer& last = chain.writable.back();
    std::byte status{};
    if (!dma.read(last.address + last.length - 1, {&status, 1}) ||
        static_cast<uint8_t>(status) > 2) {
      outcome.violation = fmt::format("status byte {} is not OK, IOERR or UNSUPP",
                                      static_cast<unsigned>(status));
      break;
    }
    if (!queue->push(chain.head, *used)) {
      outcome.device_error = true;
      break;
    }
    ++outcome.completed;
  }
  (void)queue->should_signal();
  queue->set_notifications(true);
  if (read_only && outcome.violation.empty() && disk_content(disk) != before) {
    outcome.violation = "a read-only disk changed";
  }
  return outcome;
}

}  // namespace lamina::virtio::test
