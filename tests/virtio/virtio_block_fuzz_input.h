#pragma once
// The one harness behind the virtio-blk libFuzzer target (virtio_block_fuzz) and the GCC-built
// robustness test: an input is a flags byte followed by a guest RAM image. Queue 0 lies at
// fixed addresses in that RAM, so everything the driver controls (descriptors, the available
// ring, request headers, segments, data) comes from the input. The harness pops and executes
// chains through a real Virtqueue and BlockRequestHandler on a real raw image file, exactly as
// the device's I/O thread does, and checks the device's promises.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "storage/block_device.h"
#include "virtio/virtio_block_request.h"
#include "virtio/virtqueue.h"

namespace lamina::virtio::test {

inline constexpr uint64_t kFuzzRamSize = 64 * 1024;
// Where virtqueue_driver.h's TestDriver puts a 16-entry queue at address 0.
inline constexpr VirtqueueLayout kFuzzLayout{16, 0x0, 0x100, 0x128};
inline constexpr uint64_t kFuzzDataStart = 0x400;  // first byte after the rings
inline constexpr uint64_t kFuzzDiskSize = 256 * 1024;

// Bits of the first input byte.
inline constexpr uint8_t kFuzzEventIndex = 1;
inline constexpr uint8_t kFuzzIndirect = 2;
inline constexpr uint8_t kFuzzFlush = 4;
inline constexpr uint8_t kFuzzDiscard = 8;
inline constexpr uint8_t kFuzzWriteZeroes = 16;
inline constexpr uint8_t kFuzzReadOnly = 32;

struct FuzzOutcome {
  uint32_t completed = 0;  // chains pushed to the used ring
  bool device_error = false;  // the device would have reported DEVICE_NEEDS_RESET
  std::string violation;   // non-empty: a promise was broken (the fuzzer aborts on it)
};

class BlockFuzzHarness {
 public:
  // Creates a raw image in `folder` and opens it read-write and read-only.
  explicit BlockFuzzHarness(const std::string& folder);
  ~BlockFuzzHarness();
  BlockFuzzHarness(const BlockFuzzHarness&) = delete;
  BlockFuzzHarness& operator=(const BlockFuzzHarness&) = delete;

  bool ready() const { return writable_ != nullptr && read_only_ != nullptr; }
  FuzzOutcome run(std::span<const uint8_t> input);

 private:
  std::unique_ptr<storage::BlockDevice> writable_;
  std::unique_ptr<storage::BlockDevice> read_only_;
};

}  // namespace lamina::virtio::test
