// copy_content (declared in image_operations.h): the data path of convert and of the rewrites
// (resize, compact). A reader thread maps and reads the source into a few fixed buffers; a pool
// of writer threads finds the non-zero grains of each piece and writes them in source order,
// so reading, zero detection, writing and (through the destination's WriteBehind) writeback
// overlap (qemu-img convert keeps several requests in flight for the same reason). The writes
// themselves take turns: buffered writes to one file serialize on its inode lock anyway, and
// in order they allocate sequentially and coalesce for writeback (measured faster than
// concurrent writes into a raw or fixed VHD file).
// Memory is bounded by kBuffers pieces. Progress is reported from the writers, one call at a
// time, once per piece.

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "storage/host_file.h"
#include "storage/image_operations.h"

namespace lamina::storage {

namespace {

constexpr uint64_t kChunk = 4 << 20;
// How far one map_extent query looks: long zero runs become few pieces.
constexpr uint64_t kMapReach = uint64_t{1} << 30;
constexpr size_t kWriters = 2;
// One piece being read, one waiting, one per writer: at most 16 MiB of buffers.
constexpr size_t kBuffers = kWriters + 2;
// Zero detection grain: small enough to keep sparse holes, large enough to write efficiently.
constexpr uint64_t kZeroGrain = 64 << 10;

struct Piece {
  uint64_t sequence = 0;          // position in the source order
  uint64_t offset = 0;
  uint64_t length = 0;            // bytes of the virtual disk this piece covers
  bool zero = false;              // surely zero: nothing to write
  std::vector<std::byte> data;    // `length` bytes unless zero
};

// The state the reader, the writers and the reporting thread share. Thread-safety: every
// member function takes mutex_.
class Pipeline {
 public:
  Pipeline() {
    for (size_t i = 0; i < kBuffers; ++i) free_.emplace_back(kChunk);
  }

  // A free buffer for the reader, or nullopt once the copy stopped.
  std::optional<std::vector<std::byte>> take_buffer() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopped_ || !free_.empty(); });
    if (stopped_) return std::nullopt;
    auto buffer = std::move(free_.front());
    free_.pop_front();
    return buffer;
  }
  void give_buffer(std::vector<std::byte> buffer) {
    std::lock_guard lock(mutex_);
    free_.push_back(std::move(buffer));
    changed_.notify_all();
  }
  void push(Piece piece) {
    std::lock_guard lock(mutex_);
    piece.sequence = pushed_++;
    filled_.push_back(std::move(piece));
    changed_.notify_all();
  }
  // The next piece for a writer, or nullopt when the copy stopped or everything was taken.
  std::optional<Piece> pop() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopped_ || reading_done_ || !filled_.empty(); });
    if (stopped_ || filled_.empty()) return std::nullopt;
    auto piece = std::move(filled_.front());
    filled_.pop_front();
    return piece;
  }
  // Waits until every earlier piece was written. False when the copy stopped.
  bool wait_turn(uint64_t sequence) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopped_ || next_turn_ == sequence; });
    return !stopped_;
  }
  void end_turn() {
    std::lock_guard lock(mutex_);
    ++next_turn_;
    changed_.notify_all();
  }
  // Counts a written piece and reports it; progress is called under the lock, so calls never
  // overlap and `done` only grows. Its false stops the copy as interrupted.
  void complete(uint64_t bytes, uint64_t total, const Progress& progress) {
    std::lock_guard lock(mutex_);
    done_ += bytes;
    if (progress && !stopped_ && !progress(done_, total)) {
      error_ = interrupted_error("nothing was written");
      stopped_ = true;
    }
    changed_.notify_all();
  }
  void reader_finished() {
    std::lock_guard lock(mutex_);
    reading_done_ = true;
    changed_.notify_all();
  }
  // Stops everything; the first error is the one reported.
  void stop(std::optional<Error> error) {
    std::lock_guard lock(mutex_);
    if (error && !error_) error_ = std::move(error);
    stopped_ = true;
    changed_.notify_all();
  }
  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopped_;
  }
  std::optional<Error> error() {
    std::lock_guard lock(mutex_);
    return error_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<std::byte>> free_;
  std::deque<Piece> filled_;
  uint64_t pushed_ = 0;
  uint64_t next_turn_ = 0;
  uint64_t done_ = 0;
  bool reading_done_ = false;
  bool stopped_ = false;
  std::optional<Error> error_;
};

void read_pieces(BlockDevice& source, uint64_t total, Pipeline& pipeline) {
  const uint64_t source_size = source.size();
  uint64_t offset = 0;
  while (offset < total && !pipeline.stopped()) {
    auto extent = source.map_extent(offset, std::min(kMapReach, source_size - offset));
    if (!extent) {
      pipeline.stop(extent.error());
      break;
    }
    uint64_t length = extent->length;
    if (extent->zero && length >= kSectorSize) {
      length = std::min(length / kSectorSize * kSectorSize, total - offset);
      pipeline.push(Piece{0, offset, length, true, {}});
      offset += length;
      continue;
    }
    // A run that ends inside a sector (a raw file's odd end) is read whole, zero-padded.
    length = std::min(std::max((length + kSectorSize - 1) / kSectorSize * kSectorSize, kSectorSize),
                      std::min(kChunk, total - offset));
    auto buffer = pipeline.take_buffer();
    if (!buffer) break;
    buffer->resize(static_cast<size_t>(length));
    uint64_t readable = std::min(length, source_size - offset);
    auto span = std::span(*buffer);
    if (auto r = source.read(offset, span.first(static_cast<size_t>(readable))); !r) {
      pipeline.stop(r.error());
      break;
    }
    std::fill(span.begin() + static_cast<ptrdiff_t>(readable), span.end(), std::byte{0});
    pipeline.push(Piece{0, offset, length, false, std::move(*buffer)});
    offset += length;
  }
  pipeline.reader_finished();
}

// The runs [start, end) of a piece's grains that hold data, merged.
std::vector<std::pair<uint64_t, uint64_t>> data_runs(const Piece& piece) {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  if (piece.zero) return runs;
  auto span = std::span(piece.data);
  for (uint64_t at = 0; at < piece.length; at += kZeroGrain) {
    uint64_t grain = std::min(kZeroGrain, piece.length - at);
    if (is_all_zero(span.subspan(static_cast<size_t>(at), static_cast<size_t>(grain)))) continue;
    if (!runs.empty() && runs.back().second == at) {
      runs.back().second = at + grain;
    } else {
      runs.emplace_back(at, at + grain);
    }
  }
  return runs;
}

void write_pieces(BlockDevice& destination, Pipeline& pipeline, uint64_t total,
                  const Progress& progress) {
  while (auto item = pipeline.pop()) {
    Piece& piece = *item;
    // Zero detection runs in parallel; the writes take turns.
    auto runs = data_runs(piece);
    if (!pipeline.wait_turn(piece.sequence)) break;
    Result<void> written;
    for (auto [start, end] : runs) {
      auto run = std::span<const std::byte>(piece.data)
                     .subspan(static_cast<size_t>(start), static_cast<size_t>(end - start));
      written = destination.write(piece.offset + start, run);
      if (!written) break;
    }
    pipeline.end_turn();
    if (!piece.zero) pipeline.give_buffer(std::move(piece.data));
    if (!written) {
      pipeline.stop(written.error());
      break;
    }
    pipeline.complete(piece.length, total, progress);
  }
}

}  // namespace

Result<void> copy_content(BlockDevice& source, BlockDevice& destination,
                          const Progress& progress) {
  const uint64_t total = std::min((source.size() + kSectorSize - 1) / kSectorSize * kSectorSize,
                                  destination.size());
  Pipeline pipeline;
  {
    // Declared after the pipeline: joined (end of this block) before it is destroyed.
    std::jthread reader([&] { read_pieces(source, total, pipeline); });
    std::vector<std::jthread> writers;
    for (size_t i = 0; i < kWriters; ++i)
      writers.emplace_back([&] { write_pieces(destination, pipeline, total, progress); });
    for (std::jthread& writer : writers) writer.join();
    pipeline.stop(std::nullopt);  // releases a reader waiting for a buffer
  }
  if (auto error = pipeline.error()) return fail(*error);
  return {};
}

}  // namespace lamina::storage
