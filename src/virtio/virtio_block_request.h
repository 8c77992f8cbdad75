#pragma once
// BlockRequestHandler: executes one virtio-blk request (virtio 1.2 section 5.2.6) on a
// storage::BlockDevice: parses the header and data out of a descriptor chain, checks every
// field the driver wrote, performs the I/O and writes the status byte.
//
// Every field of a request is untrusted. A malformed request that still has a device-writable
// byte for the status completes with VIRTIO_BLK_S_IOERR (or S_UNSUPP for types and flags the
// device does not support); only a chain with no writable byte at all fails with kGuestFatal,
// which the device turns into DEVICE_NEEDS_RESET. Reads go straight from the image into guest
// RAM and writes straight from guest RAM into the image when every data buffer is a whole number
// of sectors (what drivers do); other layouts go through a bounded bounce buffer.
//
// Ownership: borrows the BlockDevice. Thread-safety: one thread at a time (the device's I/O
// thread); set_features() only while that thread is stopped.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/log.h"
#include "storage/block_device.h"
#include "virtio/dma_memory.h"
#include "virtio/virtqueue.h"

namespace lamina::virtio {

// Feature bits (section 5.2.3).
inline constexpr uint64_t kBlockFeatureSizeMax = uint64_t{1} << 1;
inline constexpr uint64_t kBlockFeatureSegMax = uint64_t{1} << 2;
inline constexpr uint64_t kBlockFeatureReadOnly = uint64_t{1} << 5;
inline constexpr uint64_t kBlockFeatureBlockSize = uint64_t{1} << 6;
inline constexpr uint64_t kBlockFeatureFlush = uint64_t{1} << 9;
inline constexpr uint64_t kBlockFeatureDiscard = uint64_t{1} << 13;
inline constexpr uint64_t kBlockFeatureWriteZeroes = uint64_t{1} << 14;

// Request types (section 5.2.6).
enum class BlockRequestType : uint32_t {
  kIn = 0,
  kOut = 1,
  kFlush = 4,
  kGetId = 8,
  kGetLifetime = 10,
  kDiscard = 11,
  kWriteZeroes = 13,
  kSecureErase = 14,
};

// Status byte values (section 5.2.6).
enum class BlockStatus : uint8_t { kOk = 0, kIoError = 1, kUnsupported = 2 };

// Request layout and the limits the device advertises in its configuration space.
inline constexpr uint64_t kBlockHeaderSize = 16;        // le32 type, le32 reserved, le64 sector
inline constexpr uint64_t kBlockSegmentSize = 16;       // struct virtio_blk_discard_write_zeroes
inline constexpr size_t kBlockIdLength = 20;            // VIRTIO_BLK_T_GET_ID
// Data segments per request: Linux puts header + seg_max segments + status in one indirect
// table, and the Virtqueue counts the ring's indirect descriptor as well against the queue size
// (256), so 253 is the most that fits (254 made full 1 MiB requests a driver error).
inline constexpr uint32_t kBlockSegMax = 253;
inline constexpr uint32_t kBlockMaxDiscardSectors = uint32_t{1} << 22;  // 2 GiB per segment
inline constexpr uint32_t kBlockMaxDiscardSegments = 32;
inline constexpr uint32_t kBlockDiscardAlignment = 8;  // sectors (4 KiB)
inline constexpr uint32_t kBlockMaxWriteZeroesSectors = uint32_t{1} << 17;  // 64 MiB
inline constexpr uint32_t kBlockMaxWriteZeroesSegments = 8;
// Largest IN/OUT data a request may carry. Linux sends at most max_sectors_kb (a few MiB); the
// bound keeps one request (buffers may repeat, so a chain can describe far more than RAM) from
// holding the I/O thread, and so a reset, for long.
inline constexpr uint64_t kBlockMaxDataLength = uint64_t{1} << 30;

// A guest-physical byte range made of one or more adjacent buffers of a chain.
struct GuestRun {
  uint64_t address = 0;
  uint64_t length = 0;
};

class BlockRequestHandler {
 public:
  using Id = std::array<std::byte, kBlockIdLength>;

  BlockRequestHandler(storage::BlockDevice& disk, const Id& id);

  // The features the driver accepted; decides which optional types are honoured and whether
  // writes are write-through (FLUSH offered but not negotiated, section 5.2.6.2).
  void set_features(uint64_t features);

  // Executes `chain` and writes its status byte. Returns the used length for
  // Virtqueue::push(): the bytes written into the writable buffers counted from their start.
  // kGuestFatal when the chain has no device-writable byte to carry a status.
  [[nodiscard]] Result<uint32_t> handle(Virtqueue& queue, const DmaMemory& memory,
                                        const DescriptorChain& chain);

  uint64_t capacity_sectors() const { return capacity_sectors_; }

  // Requests completed per status, for tests and statistics.
  struct Counters {
    uint64_t ok = 0;
    uint64_t io_error = 0;
    uint64_t unsupported = 0;
  };
  const Counters& counters() const { return counters_; }

  // Completed guest reads, writes and flushes with their bytes, readable from any thread
  // (laminad's metrics ask while the I/O thread works).
  struct Traffic {
    uint64_t read_ops = 0;
    uint64_t read_bytes = 0;
    uint64_t write_ops = 0;
    uint64_t write_bytes = 0;
    uint64_t flushes = 0;
  };
  Traffic traffic() const;

 private:
  struct Request {
    Virtqueue& queue;
    const DmaMemory& memory;
    const DescriptorChain& chain;
    BlockRequestType type;
    uint64_t sector;
    uint64_t data_in_length;   // writable bytes before the status byte
    uint64_t data_out_length;  // readable bytes after the header
    uint64_t filled = 0;       // writable bytes written from their start
  };

  BlockStatus execute(Request& request);
  void count(const Request& request);
  BlockStatus read(Request& request);
  BlockStatus write(Request& request);
  BlockStatus flush();
  BlockStatus get_id(Request& request);
  BlockStatus discard_or_write_zeroes(Request& request);
  // After a completed modification: makes it stable when the driver runs write-through.
  BlockStatus settle();
  // Whether [sector, sector + count) lies within the disk (no overflow).
  bool in_range(uint64_t sector, uint64_t count) const;
  // Logs a driver mistake or a host I/O failure (rate-limited) and returns `status`.
  BlockStatus refuse(BlockStatus status, std::string_view what);
  BlockStatus io_failure(const Error& error);

  storage::BlockDevice& disk_;
  Id id_;
  uint64_t capacity_sectors_;
  bool read_only_;
  uint64_t features_ = 0;
  Counters counters_;
  std::atomic<uint64_t> read_ops_ = 0;
  std::atomic<uint64_t> read_bytes_ = 0;
  std::atomic<uint64_t> write_ops_ = 0;
  std::atomic<uint64_t> write_bytes_ = 0;
  std::atomic<uint64_t> flushes_ = 0;
  std::vector<std::byte> bounce_;
  std::vector<GuestRun> runs_;  // scratch for gather_runs(), kept to avoid allocations
  std::vector<std::span<std::byte>> targets_;  // the runs in guest RAM, for read_scattered()
  RateLimiter limiter_;
};

}  // namespace lamina::virtio
