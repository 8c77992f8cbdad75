// copy_content (declared in image_operations.h): the data path of convert and of a resize that
// rewrites. A reading thread maps and reads the source while the calling thread writes the
// destination, so reading and writing overlap (qemu-img convert keeps several requests in
// flight for the same reason). Each device is used by one thread only.

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
constexpr size_t kBuffers = 3;
// Zero detection grain: small enough to keep sparse holes, large enough to write efficiently.
constexpr uint64_t kZeroGrain = 64 << 10;

struct Piece {
  uint64_t offset = 0;
  uint64_t length = 0;            // bytes of the virtual disk this piece covers
  bool zero = false;              // surely zero: nothing to write
  std::vector<std::byte> data;    // `length` bytes unless zero
};

// The bounded hand-off between the reader and the writer: a pool of buffers going one way and
// filled pieces going the other. Thread-safety: every member is called under mutex_.
class PieceQueue {
 public:
  PieceQueue() {
    for (size_t i = 0; i < kBuffers; ++i) free_.emplace_back(kChunk);
  }

  // A free buffer, or nullopt once the writer has stopped.
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
    buffer.resize(kChunk);
    free_.push_back(std::move(buffer));
    changed_.notify_all();
  }
  void push(Result<Piece> piece) {
    std::lock_guard lock(mutex_);
    filled_.push_back(std::move(piece));
    changed_.notify_all();
  }
  // The next piece, or nullopt when the reader has finished and everything was taken.
  std::optional<Result<Piece>> pop() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return finished_ || !filled_.empty(); });
    if (filled_.empty()) return std::nullopt;
    auto piece = std::move(filled_.front());
    filled_.pop_front();
    return piece;
  }
  void finish() {
    std::lock_guard lock(mutex_);
    finished_ = true;
    changed_.notify_all();
  }
  void stop() {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    changed_.notify_all();
  }
  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopped_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::vector<std::byte>> free_;
  std::deque<Result<Piece>> filled_;
  bool finished_ = false;
  bool stopped_ = false;
};

void read_pieces(BlockDevice& source, uint64_t total, PieceQueue& queue) {
  const uint64_t source_size = source.size();
  uint64_t offset = 0;
  while (offset < total && !queue.stopped()) {
    auto extent = source.map_extent(offset, std::min(kMapReach, source_size - offset));
    if (!extent) {
      queue.push(fail(extent.error()));
      break;
    }
    uint64_t length = extent->length;
    if (extent->zero && length >= kSectorSize) {
      length = std::min(length / kSectorSize * kSectorSize, total - offset);
      queue.push(Piece{offset, length, true, {}});
      offset += length;
      continue;
    }
    // A run that ends inside a sector (a raw file's odd end) is read whole, zero-padded.
    length = std::min(std::max((length + kSectorSize - 1) / kSectorSize * kSectorSize, kSectorSize),
                      std::min(kChunk, total - offset));
    auto buffer = queue.take_buffer();
    if (!buffer) break;
    buffer->resize(static_cast<size_t>(length));
    uint64_t readable = std::min(length, source_size - offset);
    auto span = std::span(*buffer);
    if (auto r = source.read(offset, span.first(static_cast<size_t>(readable))); !r) {
      queue.push(fail(r.error()));
      break;
    }
    std::fill(span.begin() + static_cast<ptrdiff_t>(readable), span.end(), std::byte{0});
    queue.push(Piece{offset, length, false, std::move(*buffer)});
    offset += length;
  }
  queue.finish();
}

// Writes only the grains of a piece that hold data, merged into runs.
Result<void> write_piece(BlockDevice& destination, const Piece& piece) {
  auto span = std::span(piece.data);
  uint64_t run_start = 0;
  uint64_t run_length = 0;
  for (uint64_t at = 0; at < piece.length; at += kZeroGrain) {
    uint64_t grain = std::min(kZeroGrain, piece.length - at);
    bool zero = is_all_zero(span.subspan(static_cast<size_t>(at), static_cast<size_t>(grain)));
    if (!zero) {
      if (run_length == 0) run_start = at;
      run_length += grain;
    }
    if ((zero || at + grain == piece.length) && run_length > 0) {
      auto run = span.subspan(static_cast<size_t>(run_start), static_cast<size_t>(run_length));
      if (auto r = destination.write(piece.offset + run_start, run); !r) return r;
      run_length = 0;
    }
  }
  return {};
}

}  // namespace

Result<void> copy_content(BlockDevice& source, BlockDevice& destination,
                          const Progress& progress) {
  const uint64_t total = std::min((source.size() + kSectorSize - 1) / kSectorSize * kSectorSize,
                                  destination.size());
  PieceQueue queue;
  // Declared after the queue: joined before the queue is destroyed.
  std::jthread reader([&] { read_pieces(source, total, queue); });
  Result<void> result;
  while (auto item = queue.pop()) {
    if (!*item) {
      result = fail(item->error());
      break;
    }
    Piece& piece = **item;
    if (!piece.zero) {
      result = write_piece(destination, piece);
      queue.give_buffer(std::move(piece.data));
      if (!result) break;
    }
    if (progress && !progress(piece.offset + piece.length, total)) {
      result = fail(interrupted_error("nothing was written"));
      break;
    }
  }
  queue.stop();
  return result;
}

}  // namespace lamina::storage
