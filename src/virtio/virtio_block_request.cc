#include "virtio/virtio_block_request.h"

#include <algorithm>
#include <limits>

#include "base/byte_order.h"

namespace lamina::virtio {
namespace {

using storage::kSectorSize;

// The bounce buffer for data buffers that are not whole sectors (never for Linux's requests).
constexpr uint64_t kBounceSize = uint64_t{1} << 20;

// Segment flags of DISCARD and WRITE_ZEROES (section 5.2.6): bit 0 unmap, the rest reserved.
constexpr uint32_t kSegmentUnmap = 1;

// Collects the pieces of `buffers` covering [offset, offset + length) of their concatenation
// into `runs`, merging neighbours that are contiguous in guest RAM (Linux often hands out
// physically adjacent pages), so the image sees fewer, larger requests. Returns true when every
// run is a whole number of sectors, so each can go to the image directly (formats take
// sector-aligned offsets and lengths).
bool gather_runs(const DmaMemory& memory, const std::vector<GuestBuffer>& buffers,
                 uint64_t offset, uint64_t length, std::vector<GuestRun>& runs) {
  runs.clear();
  for (const GuestBuffer& buffer : buffers) {
    if (length == 0) break;
    if (offset >= buffer.length) {
      offset -= buffer.length;
      continue;
    }
    const uint64_t address = buffer.address + offset;
    const uint64_t take = std::min<uint64_t>(buffer.length - offset, length);
    GuestRun* last = runs.empty() ? nullptr : &runs.back();
    if (last != nullptr && last->address + last->length == address &&
        memory.guest_memory().contains(last->address, last->length + take)) {
      last->length += take;
    } else {
      runs.push_back({address, take});
    }
    offset = 0;
    length -= take;
  }
  return std::all_of(runs.begin(), runs.end(),
                     [](const GuestRun& run) { return run.length % kSectorSize == 0; });
}

}  // namespace

BlockRequestHandler::BlockRequestHandler(storage::BlockDevice& disk, const Id& id)
    : disk_(disk),
      id_(id),
      capacity_sectors_(disk.size() / kSectorSize),
      read_only_(disk.read_only()) {}

void BlockRequestHandler::set_features(uint64_t features) { features_ = features; }

bool BlockRequestHandler::in_range(uint64_t sector, uint64_t count) const {
  return sector <= capacity_sectors_ && count <= capacity_sectors_ - sector;
}

BlockStatus BlockRequestHandler::refuse(BlockStatus status, std::string_view what) {
  if (limiter_.allow()) log_warn("virtio-blk: {}", what);
  return status;
}

BlockStatus BlockRequestHandler::io_failure(const Error& error) {
  if (limiter_.allow()) log_warn("virtio-blk: I/O error: {}", error.message());
  return BlockStatus::kIoError;
}

Result<uint32_t> BlockRequestHandler::handle(Virtqueue& queue, const DmaMemory& memory,
                                             const DescriptorChain& chain) {
  // Section 5.2.6: the status is the last device-writable byte; without one the request cannot
  // be answered at all.
  if (chain.writable_length == 0) {
    return fail(ErrorCode::kGuestFatal, "virtio-blk: request without a writable status byte");
  }
  Request request{queue, memory, chain, BlockRequestType::kIn, 0, chain.writable_length - 1, 0};
  BlockStatus status;
  std::array<std::byte, kBlockHeaderSize> header{};
  // Message framing (section 2.6.4): the header may share descriptors with data, so it is
  // read as the first 16 bytes of the readable stream, wherever they lie.
  if (chain.readable_length < kBlockHeaderSize ||
      queue.copy_from(chain, 0, header) != header.size()) {
    status = refuse(BlockStatus::kIoError, "request shorter than its 16-byte header");
  } else {
    request.type = static_cast<BlockRequestType>(load_le<uint32_t>(header.data()));
    request.sector = load_le<uint64_t>(header.data() + 8);
    request.data_out_length = chain.readable_length - kBlockHeaderSize;
    status = execute(request);
  }
  const std::byte status_byte{static_cast<uint8_t>(status)};
  if (queue.copy_to(chain, chain.writable_length - 1, {&status_byte, 1}) != 1) {
    return fail(ErrorCode::kGuestFatal, "virtio-blk: the status byte is not writable");
  }
  switch (status) {
    case BlockStatus::kOk:
      ++counters_.ok;
      count(request);
      break;
    case BlockStatus::kIoError: ++counters_.io_error; break;
    case BlockStatus::kUnsupported: ++counters_.unsupported; break;
  }
  // Section 2.7.8: len counts bytes written from the first writable byte on, so the status
  // counts only when everything before it was written too.
  uint64_t used = request.filled;
  if (used == request.data_in_length) used += 1;
  return static_cast<uint32_t>(std::min<uint64_t>(used, std::numeric_limits<uint32_t>::max()));
}

void BlockRequestHandler::count(const Request& request) {
  switch (request.type) {
    case BlockRequestType::kIn:
      read_ops_.fetch_add(1, std::memory_order_relaxed);
      read_bytes_.fetch_add(request.data_in_length, std::memory_order_relaxed);
      break;
    case BlockRequestType::kOut:
      write_ops_.fetch_add(1, std::memory_order_relaxed);
      write_bytes_.fetch_add(request.data_out_length, std::memory_order_relaxed);
      break;
    case BlockRequestType::kFlush: flushes_.fetch_add(1, std::memory_order_relaxed); break;
    default: break;
  }
}

BlockRequestHandler::Traffic BlockRequestHandler::traffic() const {
  return {read_ops_.load(std::memory_order_relaxed), read_bytes_.load(std::memory_order_relaxed),
          write_ops_.load(std::memory_order_relaxed), write_bytes_.load(std::memory_order_relaxed),
          flushes_.load(std::memory_order_relaxed)};
}

BlockStatus BlockRequestHandler::execute(Request& request) {
  switch (request.type) {
    case BlockRequestType::kIn: return read(request);
    case BlockRequestType::kOut: return write(request);
    case BlockRequestType::kFlush:
      // Section 5.2.6.1: a flush carries no data; tolerated, as it changes nothing.
      return flush();
    case BlockRequestType::kGetId: return get_id(request);
    case BlockRequestType::kDiscard:
    case BlockRequestType::kWriteZeroes: return discard_or_write_zeroes(request);
    default: return refuse(BlockStatus::kUnsupported, "unsupported request type");
  }
}

BlockStatus BlockRequestHandler::read(Request& request) {
  const uint64_t length = request.data_in_length;
  if (request.data_out_length != 0) {
    return refuse(BlockStatus::kIoError, "read request with device-readable data buffers");
  }
  if (length % kSectorSize != 0) {
    return refuse(BlockStatus::kIoError, "read length is not a whole number of sectors");
  }
  if (length > kBlockMaxDataLength) {
    return refuse(BlockStatus::kIoError, "read request larger than 1 GiB");
  }
  if (!in_range(request.sector, length / kSectorSize)) {
    return refuse(BlockStatus::kIoError, "read past the end of the disk");
  }
  uint64_t offset = request.sector * kSectorSize;
  if (gather_runs(request.memory, request.chain.writable, 0, length, runs_)) {
    // Zero-copy: the image reads straight into guest RAM, all of the request's runs in one
    // call (a 1 MiB read is up to 256 scattered pages: one preadv, not 256 reads).
    targets_.clear();
    for (const GuestRun& run : runs_) {
      std::span<std::byte> target = request.memory.map_for_write(run.address, run.length);
      if (target.size() != run.length) {
        return refuse(BlockStatus::kIoError, "read buffer outside guest RAM");
      }
      targets_.push_back(target);
    }
    auto done = disk_.read_scattered(offset, targets_);
    // Reported even on failure: the image may have written part of the range.
    for (const GuestRun& run : runs_) request.memory.written(run.address, run.length);
    if (!done) return io_failure(done.error());
    request.filled += length;
    return BlockStatus::kOk;
  }
  bounce_.resize(kBounceSize);
  for (uint64_t done = 0; done < length;) {
    const uint64_t piece = std::min(kBounceSize, length - done);
    std::span<std::byte> chunk(bounce_.data(), piece);
    if (auto got = disk_.read(offset + done, chunk); !got) return io_failure(got.error());
    if (request.queue.copy_to(request.chain, done, chunk) != piece) {
      return refuse(BlockStatus::kIoError, "read buffer outside guest RAM");
    }
    done += piece;
    request.filled = done;
  }
  return BlockStatus::kOk;
}

BlockStatus BlockRequestHandler::write(Request& request) {
  const uint64_t length = request.data_out_length;
  // Section 5.2.6.2: a read-only device fails every write without writing anything.
  if (read_only_) return BlockStatus::kIoError;
  if (request.data_in_length != 0) {
    return refuse(BlockStatus::kIoError, "write request with device-writable data buffers");
  }
  if (length % kSectorSize != 0) {
    return refuse(BlockStatus::kIoError, "write length is not a whole number of sectors");
  }
  if (length > kBlockMaxDataLength) {
    return refuse(BlockStatus::kIoError, "write request larger than 1 GiB");
  }
  if (!in_range(request.sector, length / kSectorSize)) {
    return refuse(BlockStatus::kIoError, "write past the end of the disk");
  }
  uint64_t offset = request.sector * kSectorSize;
  if (gather_runs(request.memory, request.chain.readable, kBlockHeaderSize, length, runs_)) {
    // Zero-copy: the image writes straight from guest RAM.
    for (const GuestRun& run : runs_) {
      std::span<const std::byte> source = request.memory.map_for_read(run.address, run.length);
      if (source.size() != run.length) {
        return refuse(BlockStatus::kIoError, "write buffer outside guest RAM");
      }
      if (auto done = disk_.write(offset, source); !done) return io_failure(done.error());
      offset += run.length;
    }
    return settle();
  }
  bounce_.resize(kBounceSize);
  for (uint64_t done = 0; done < length;) {
    const uint64_t piece = std::min(kBounceSize, length - done);
    std::span<std::byte> chunk(bounce_.data(), piece);
    if (request.queue.copy_from(request.chain, kBlockHeaderSize + done, chunk) != piece) {
      return refuse(BlockStatus::kIoError, "write buffer outside guest RAM");
    }
    if (auto put = disk_.write(offset + done, chunk); !put) return io_failure(put.error());
    done += piece;
  }
  return settle();
}

BlockStatus BlockRequestHandler::flush() {
  if (read_only_) return BlockStatus::kOk;  // nothing was written
  if (auto done = disk_.flush(); !done) return io_failure(done.error());
  return BlockStatus::kOk;
}

BlockStatus BlockRequestHandler::settle() {
  // Section 5.2.6.2, case 1: with FLUSH offered but not negotiated, a completed write is
  // stable, so the device is write-through.
  if ((features_ & kBlockFeatureFlush) != 0) return BlockStatus::kOk;
  return flush();
}

BlockStatus BlockRequestHandler::get_id(Request& request) {
  if (request.data_out_length != 0) {
    return refuse(BlockStatus::kIoError, "GET_ID request with device-readable data buffers");
  }
  // Section 5.2.6.1 asks for exactly 20 bytes; a shorter buffer gets what fits.
  const uint64_t length = std::min<uint64_t>(request.data_in_length, kBlockIdLength);
  if (request.queue.copy_to(request.chain, 0, std::span(id_).first(length)) != length) {
    return refuse(BlockStatus::kIoError, "GET_ID buffer outside guest RAM");
  }
  request.filled = length;
  return BlockStatus::kOk;
}

BlockStatus BlockRequestHandler::discard_or_write_zeroes(Request& request) {
  const bool discard = request.type == BlockRequestType::kDiscard;
  const uint64_t feature = discard ? kBlockFeatureDiscard : kBlockFeatureWriteZeroes;
  if ((features_ & feature) == 0) {
    return refuse(BlockStatus::kUnsupported, discard ? "DISCARD was not negotiated"
                                                     : "WRITE_ZEROES was not negotiated");
  }
  if (read_only_) return BlockStatus::kIoError;
  if (request.data_in_length != 0) {
    return refuse(BlockStatus::kIoError, "discard/write-zeroes with device-writable data");
  }
  const uint64_t length = request.data_out_length;
  const uint64_t max_segments = discard ? kBlockMaxDiscardSegments : kBlockMaxWriteZeroesSegments;
  const uint64_t max_sectors = discard ? kBlockMaxDiscardSectors : kBlockMaxWriteZeroesSectors;
  if (length == 0 || length % kBlockSegmentSize != 0) {
    return refuse(BlockStatus::kIoError, "discard/write-zeroes data is not whole segments");
  }
  const uint64_t count = length / kBlockSegmentSize;
  if (count > max_segments) {
    return refuse(BlockStatus::kIoError, "discard/write-zeroes with too many segments");
  }
  std::array<std::byte, kBlockMaxDiscardSegments * kBlockSegmentSize> raw{};
  std::span<std::byte> segments(raw.data(), length);
  if (request.queue.copy_from(request.chain, kBlockHeaderSize, segments) != length) {
    return refuse(BlockStatus::kIoError, "discard/write-zeroes segments outside guest RAM");
  }
  // Every segment is checked before any is executed, so a bad request changes nothing.
  // Section 5.2.6.2: unknown flags, and unmap on a discard, are S_UNSUPP.
  for (uint64_t index = 0; index < count; ++index) {
    const uint32_t flags = load_le<uint32_t>(&segments[index * kBlockSegmentSize + 12]);
    if ((flags & ~kSegmentUnmap) != 0 || (discard && (flags & kSegmentUnmap) != 0)) {
      return refuse(BlockStatus::kUnsupported, "discard/write-zeroes segment with unknown flags");
    }
  }
  for (uint64_t index = 0; index < count; ++index) {
    const std::byte* segment = &segments[index * kBlockSegmentSize];
    const uint64_t sector = load_le<uint64_t>(segment);
    const uint32_t sectors = load_le<uint32_t>(segment + 8);
    if (sectors > max_sectors) {
      return refuse(BlockStatus::kIoError, "discard/write-zeroes segment larger than advertised");
    }
    if (!in_range(sector, sectors)) {
      return refuse(BlockStatus::kIoError, "discard/write-zeroes past the end of the disk");
    }
  }
  for (uint64_t index = 0; index < count; ++index) {
    const std::byte* segment = &segments[index * kBlockSegmentSize];
    const uint64_t offset = load_le<uint64_t>(segment) * kSectorSize;
    const uint64_t bytes = uint64_t{load_le<uint32_t>(segment + 8)} * kSectorSize;
    const bool unmap = (load_le<uint32_t>(segment + 12) & kSegmentUnmap) != 0;
    if (bytes == 0) continue;
    auto done = discard ? disk_.discard(offset, bytes) : disk_.write_zeroes(offset, bytes, unmap);
    if (!done) return io_failure(done.error());
  }
  return settle();
}

}  // namespace lamina::virtio
