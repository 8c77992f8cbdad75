#pragma once
// BlockDevice: the one interface every disk image format and the virtio-blk device meet at.
//
// Offsets and lengths are in bytes. Formats whose unit is the 512-byte sector require
// offset and length to be multiples of kSectorSize and fail with kInvalidArgument otherwise.
// Thread-safety: an implementation may be used from one thread at a time unless it says more.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/error.h"
#include "storage/scatter_list.h"

namespace lamina::storage {

inline constexpr uint64_t kSectorSize = 512;
// The largest zero buffer the default write_zeroes() allocates.
inline constexpr uint64_t kZeroChunk = 1 << 20;

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;

  // Virtual size in bytes as the guest sees it.
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;

  // Reads data.size() bytes at offset; unallocated ranges read as zeros (or the parent's data).
  [[nodiscard]] virtual Result<void> read(uint64_t offset, std::span<std::byte> data) = 0;
  // Reads total_bytes(buffers) bytes at offset into the buffers one after another, as read()
  // of their concatenation would (the same alignment rules). The default reads each buffer with
  // read(); formats whose data lies in one stretch of a file override it with one vectored read
  // per stretch (a 1 MiB guest request is up to 256 scattered pages).
  [[nodiscard]] virtual Result<void> read_scattered(uint64_t offset, ScatterList buffers);
  [[nodiscard]] virtual Result<void> write(uint64_t offset, std::span<const std::byte> data) = 0;
  // Makes every acknowledged write durable (data, then metadata) before returning.
  [[nodiscard]] virtual Result<void> flush() = 0;
  // Tells the format a range's content is no longer needed; it may then read as zeros.
  [[nodiscard]] virtual Result<void> discard(uint64_t offset, uint64_t length) = 0;
  // Makes [offset, offset + length) read as zeros (virtio-blk WRITE_ZEROES). may_unmap: the
  // format may free the space behind it (a hole, an unallocated block) instead of writing
  // zeros; without it the space stays allocated where the format allocates. The default writes
  // zero buffers of at most kZeroChunk bytes through write(); formats override it where they
  // can do better. Same alignment rules and durability as write() (flush makes it durable).
  [[nodiscard]] virtual Result<void> write_zeroes(uint64_t offset, uint64_t length,
                                                  bool may_unmap);

  // One run of the device's content starting at offset, for copies that skip empty space.
  struct Extent {
    uint64_t length;  // 1..max_length bytes
    bool zero;        // true: the run surely reads as zeros (a hole or an unallocated block)
  };
  // Describes the run at offset (offset < size(), max_length > 0). A format that cannot tell
  // keeps this default, "the whole range may hold data"; copies then compare bytes to zero.
  // Live migration with shared storage: releases (false) or retakes (true) the write lock of
  // the image file this device writes, leaving parents' shared locks alone. kUnsupported for
  // formats that cannot; a retake fails when another process holds the file.
  [[nodiscard]] virtual Result<void> set_write_lock(bool locked) {
    (void)locked;
    return fail(ErrorCode::kUnsupported,
                "this image format cannot hand its lock over (live migration needs raw, VHD or "
                "VHDX disks)");
  }

  [[nodiscard]] virtual Result<Extent> map_extent(uint64_t offset, uint64_t max_length) {
    (void)offset;
    return Extent{max_length, false};
  }
};

}  // namespace lamina::storage
