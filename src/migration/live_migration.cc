#include "migration/live_migration.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "migration/machine_state.h"
#include "migration/migration_protocol.h"
#include "storage/host_file.h"

namespace lamina::migration {
namespace {

using Clock = std::chrono::steady_clock;

// A dirty rest this small goes at the switchover however fast it shrinks.
constexpr uint64_t kSettledRestBytes = 16 * kPageBytes;

// One kPages message of the pages at `addresses` as they are now (`skip_zero`: the first
// round, where the destination's RAM is all zeros already); nothing when every page was
// skipped.
std::optional<std::vector<std::byte>> encode_batch(GuestMemory& memory,
                                                   std::span<const uint64_t> addresses,
                                                   bool skip_zero, uint16_t round) {
  std::vector<Page> pages;
  pages.reserve(addresses.size());
  for (uint64_t address : addresses) {
    const std::byte* host = memory.host_pointer(address, kPageBytes);
    if (host == nullptr) continue;  // a marked address outside RAM (MMIO): nothing to send
    const bool zero = storage::is_all_zero({host, kPageBytes});
    if (zero && skip_zero) continue;
    pages.push_back({address, zero ? std::span<const std::byte>()
                                   : std::span<const std::byte>(host, kPageBytes)});
  }
  if (pages.empty()) return std::nullopt;
  return encode_pages(pages, round);
}

// The lanes: further connections that carry only pages, each with a thread that reads,
// compresses and writes the batches it is given (zstd is where a migration's CPU time goes,
// and one connection's TCP window need not limit the link). Batches go round-robin; each
// lane's queue is short, so the batches a lane holds are read close to when they are sent.
class Lanes {
 public:
  Lanes(GuestMemory& memory, std::span<const int> links) : memory_(memory) {
    queues_.resize(links.size());
    for (size_t index = 0; index < links.size(); ++index) {
      threads_.emplace_back([this, index, link = links[index]] { serve(index, link); });
    }
  }
  ~Lanes() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    threads_.clear();  // joins
  }
  Lanes(const Lanes&) = delete;
  Lanes& operator=(const Lanes&) = delete;

  bool empty() const { return threads_.empty(); }

  Result<void> push(std::vector<uint64_t> addresses, bool skip_zero, uint16_t round) {
    std::unique_lock lock(mutex_);
    auto& queue = queues_[next_];
    next_ = (next_ + 1) % queues_.size();
    changed_.wait(lock, [&] { return queue.size() < kQueueDepth || error_; });
    if (error_) return fail(*error_);
    queue.push_back({std::move(addresses), skip_zero, round});
    ++pending_;
    changed_.notify_all();
    return {};
  }

  // Until every batch given so far is on its lane's link; the first lane's error.
  Result<void> drain() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return pending_ == 0 || error_; });
    if (error_) return fail(*error_);
    return {};
  }

  // The lanes' last message, after the last pages (drained).
  Result<void> end(std::span<const int> links) {
    for (int link : links) {
      if (auto sent = write_frame(link, make_message(MessageType::kLaneEnd)); !sent) return sent;
      transferred_ += 5;
    }
    return {};
  }

  uint64_t transferred() const { return transferred_.load(); }

 private:
  struct Batch {
    std::vector<uint64_t> addresses;
    bool skip_zero = false;
    uint16_t round = 0;
  };
  static constexpr size_t kQueueDepth = 4;

  void serve(size_t index, int link) {
    for (;;) {
      Batch batch;
      bool failed_before = false;  // after a lane's error, batches are only counted off
      {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return stopping_ || !queues_[index].empty(); });
        if (queues_[index].empty()) return;
        batch = std::move(queues_[index].front());
        queues_[index].pop_front();
        failed_before = error_.has_value();
        changed_.notify_all();
      }
      Result<void> written;
      if (!failed_before) {
        if (auto message = encode_batch(memory_, batch.addresses, batch.skip_zero, batch.round)) {
          transferred_ += message->size() + 4;
          written = write_frame(link, *message);
        }
      }
      std::lock_guard lock(mutex_);
      if (!written && !error_) error_ = written.error().with_context("a migration connection");
      --pending_;
      changed_.notify_all();
    }
  }

  GuestMemory& memory_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::deque<Batch>> queues_;
  size_t next_ = 0;
  size_t pending_ = 0;
  std::optional<Error> error_;
  bool stopping_ = false;
  std::atomic<uint64_t> transferred_{0};
  std::vector<std::jthread> threads_;  // last: joined first
};

// Sends pages in kPages messages of up to kMaxPagesPerMessage: on the main link, or over the
// lanes when there are any. Other messages go on the main link.
class PageSender {
 public:
  PageSender(GuestMemory& memory, int link, std::span<const int> lanes)
      : memory_(memory), link_(link), lanes_(memory, lanes) {}

  // The round the pages added from now on belong to (the destination keeps the latest).
  void set_round(uint32_t round) {
    round_ = static_cast<uint16_t>(std::min<uint32_t>(round, UINT16_MAX));
  }

  // `skip_zero`: the first round, where the destination's RAM is all zeros already.
  Result<void> add(uint64_t guest_physical, bool skip_zero) {
    if (!batch_.empty() && skip_zero != batch_skips_zero_) {
      if (auto sent = dispatch(); !sent) return sent;
    }
    batch_skips_zero_ = skip_zero;
    batch_.push_back(guest_physical);
    if (batch_.size() == kMaxPagesPerMessage) return dispatch();
    return {};
  }

  // Everything added so far is on its link.
  Result<void> flush() {
    if (auto sent = dispatch(); !sent) return sent;
    return lanes_.empty() ? Result<void>() : lanes_.drain();
  }

  Result<void> send(std::span<const std::byte> message) {
    transferred_ += message.size() + 4;
    return write_frame(link_, message);
  }

  // After the last pages: each lane's kLaneEnd.
  Result<void> end_lanes(std::span<const int> lanes) {
    if (auto flushed = flush(); !flushed) return flushed;
    return lanes_.end(lanes);
  }

  uint64_t transferred() const { return transferred_ + lanes_.transferred(); }

 private:
  Result<void> dispatch() {
    if (batch_.empty()) return {};
    std::vector<uint64_t> batch = std::exchange(batch_, {});
    if (!lanes_.empty()) return lanes_.push(std::move(batch), batch_skips_zero_, round_);
    auto message = encode_batch(memory_, batch, batch_skips_zero_, round_);
    if (!message) return {};
    transferred_ += message->size() + 4;
    return write_frame(link_, *message);
  }

  GuestMemory& memory_;
  int link_;
  Lanes lanes_;
  std::vector<uint64_t> batch_;
  bool batch_skips_zero_ = false;
  uint16_t round_ = 0;
  uint64_t transferred_ = 0;
};

uint64_t count_pages(const std::vector<uint64_t>& bitmap) {
  uint64_t count = 0;
  for (uint64_t word : bitmap) count += static_cast<uint64_t>(std::popcount(word));
  return count;
}

Result<void> send_bitmap(PageSender& sender, const std::vector<uint64_t>& bitmap,
                         const std::function<bool()>& cancelled) {
  for (size_t index = 0; index < bitmap.size(); ++index) {
    uint64_t word = bitmap[index];
    while (word != 0) {
      const unsigned bit = static_cast<unsigned>(std::countr_zero(word));
      word &= word - 1;
      const uint64_t page = index * 64 + bit;
      if (auto added = sender.add(page * kPageBytes, false); !added) return added;
    }
    if ((index & 1023) == 0 && cancelled && cancelled()) {
      return fail(ErrorCode::kInvalidArgument, "the VM stopped during its migration");
    }
  }
  return sender.flush();
}

void merge(std::vector<uint64_t>& into, const std::vector<uint64_t>& more) {
  if (into.size() < more.size()) into.resize(more.size());
  for (size_t index = 0; index < more.size(); ++index) into[index] |= more[index];
}

// --storage copy: the disks' content, whole at first, then the chunks rewritten since.
class DiskCopier {
 public:
  DiskCopier(const std::vector<storage::TrackedBlockDevice*>& disks, PageSender& sender)
      : disks_(disks), sender_(sender), dirty_(disks.size()) {
    for (storage::TrackedBlockDevice* disk : disks_) total_bytes_ += disk->size();
  }
  ~DiskCopier() {
    for (storage::TrackedBlockDevice* disk : disks_) disk->stop_tracking();
  }
  DiskCopier(const DiskCopier&) = delete;
  DiskCopier& operator=(const DiskCopier&) = delete;

  uint64_t total_bytes() const { return total_bytes_; }

  // The first pass: tracking starts before it reads, so a chunk written behind it is sent
  // again. Ranges that read as zeros are skipped (the destination's new image reads zeros).
  Result<void> copy_all(const std::function<bool()>& cancelled,
                        const std::function<void(uint64_t)>& progress) {
    for (storage::TrackedBlockDevice* disk : disks_) disk->start_tracking();
    std::vector<std::byte> buffer(kMaxDiskChunk);
    uint64_t copied = 0;
    for (size_t index = 0; index < disks_.size(); ++index) {
      storage::TrackedBlockDevice& disk = *disks_[index];
      for (uint64_t offset = 0; offset < disk.size(); offset += kMaxDiskChunk) {
        const uint64_t length = std::min<uint64_t>(kMaxDiskChunk, disk.size() - offset);
        auto extent = disk.map_extent(offset, length);
        if (!extent) return fail(extent.error().with_context("copying a disk"));
        if (!(extent->zero && extent->length >= length)) {
          if (auto sent = send_range(static_cast<uint32_t>(index), offset, length, buffer, true);
              !sent) {
            return sent;
          }
        }
        copied += length;
        if ((offset & ((uint64_t{64} << 20) - 1)) == 0) {
          if (cancelled && cancelled()) {
            return fail(ErrorCode::kInvalidArgument, "the VM stopped during its migration");
          }
          progress(copied);
        }
      }
    }
    return {};
  }

  // Adds the chunks written since the last look to those waiting; returns the bytes waiting.
  uint64_t take_dirty() {
    for (size_t index = 0; index < disks_.size(); ++index) merge(dirty_[index], disks_[index]->take_dirty());
    return pending_bytes();
  }

  uint64_t pending_bytes() const {
    uint64_t chunks = 0;
    for (const auto& bitmap : dirty_) chunks += count_pages(bitmap);
    return chunks * storage::TrackedBlockDevice::kChunkBytes;
  }

  // Sends the waiting chunks, runs of them up to kMaxDiskChunk per message.
  Result<void> send_dirty() {
    constexpr uint64_t kChunk = storage::TrackedBlockDevice::kChunkBytes;
    std::vector<std::byte> buffer(kMaxDiskChunk);
    for (size_t index = 0; index < disks_.size(); ++index) {
      std::vector<uint64_t> bitmap = std::exchange(dirty_[index], {});
      const uint64_t size = disks_[index]->size();
      const uint64_t chunks = bitmap.size() * 64;
      for (uint64_t chunk = 0; chunk < chunks;) {
        if ((bitmap[chunk / 64] & (uint64_t{1} << (chunk % 64))) == 0) {
          ++chunk;
          continue;
        }
        uint64_t run = 1;
        while (chunk + run < chunks && run * kChunk < kMaxDiskChunk &&
               (bitmap[(chunk + run) / 64] & (uint64_t{1} << ((chunk + run) % 64))) != 0) {
          ++run;
        }
        const uint64_t offset = chunk * kChunk;
        if (offset < size) {
          const uint64_t length = std::min(run * kChunk, size - offset);
          if (auto sent = send_range(static_cast<uint32_t>(index), offset, length, buffer, false);
              !sent) {
            return sent;
          }
        }
        chunk += run;
      }
    }
    return {};
  }

 private:
  // `skip_zero`: the first pass, where the destination reads zeros already; later a range
  // that became zeros is sent as such.
  Result<void> send_range(uint32_t disk, uint64_t offset, uint64_t length,
                          std::vector<std::byte>& buffer, bool skip_zero) {
    const std::span<std::byte> data(buffer.data(), length);
    if (auto read = disks_[disk]->read(offset, data); !read) {
      return fail(read.error().with_context("copying a disk"));
    }
    const bool zero = storage::is_all_zero(data);
    if (zero && skip_zero) return {};
    return sender_.send(encode_disk_chunk(disk, offset, data, zero));
  }

  std::vector<storage::TrackedBlockDevice*> disks_;
  PageSender& sender_;
  std::vector<std::vector<uint64_t>> dirty_;  // per disk, chunks waiting to be sent
  uint64_t total_bytes_ = 0;
};

}  // namespace

Result<LiveMigrationResult> migrate_out(machine::Machine& machine, int link,
                                        const LiveMigrationOptions& options,
                                        const LiveMigrationHooks& hooks) {
  const auto started = Clock::now();
  if (!machine.start_dirty_logging()) {
    return fail(ErrorCode::kUnsupported,
                "live migration works on the built-in CPU only (--accel emu): this backend "
                "does not log the guest's writes yet");
  }
  GuestMemory& memory = machine.memory();
  PageSender sender(memory, link, options.lanes);
  DiskCopier disks(hooks.copied_disks, sender);
  LiveMigrationProgress progress;
  progress.ram_bytes = memory.total_size();
  progress.disk_bytes = disks.total_bytes();
  unsigned throttle = 0;
  auto give_up = [&](Error error) -> Result<LiveMigrationResult> {
    machine.set_vcpu_throttle(0);
    machine.stop_dirty_logging();
    return fail(std::move(error));
  };
  auto report = [&](std::string phase, uint64_t remaining_bytes) {
    progress.phase = std::move(phase);
    progress.transferred_bytes = sender.transferred();
    progress.remaining_bytes = remaining_bytes;
    progress.throttle_percent = throttle;
    if (hooks.progress) hooks.progress(progress);
  };

  // --storage copy: the disks first, whole; the guest's rewrites follow with the RAM rounds.
  if (auto copied = disks.copy_all(hooks.cancelled,
                                   [&](uint64_t done) {
                                     progress.disk_copied_bytes = done;
                                     report("disks", progress.disk_bytes - done);
                                   });
      !copied) {
    return give_up(copied.error());
  }
  progress.disk_copied_bytes = progress.disk_bytes;

  // Round 0: all of RAM (the destination starts from zeros).
  auto round_start = Clock::now();
  for (const RamRegion& region : memory.regions()) {
    for (uint64_t offset = 0; offset < region.size; offset += kPageBytes) {
      if (auto added = sender.add(region.guest_physical + offset, true); !added) {
        return give_up(added.error());
      }
      if ((offset & ((uint64_t{64} << 20) - 1)) == 0 && hooks.cancelled && hooks.cancelled()) {
        return give_up(Error(ErrorCode::kInvalidArgument, "the VM stopped during its migration"));
      }
    }
  }
  if (auto flushed = sender.flush(); !flushed) return give_up(flushed.error());
  // What the last round sent (round 0: all of RAM).
  uint64_t previous_dirty = memory.total_size();
  std::vector<uint64_t> dirty;
  for (;;) {
    const double seconds =
        std::max(1e-4, std::chrono::duration<double>(Clock::now() - round_start).count());
    // Bandwidth: the bytes written to the link over the whole migration so far. Not the
    // bytes of RAM and disk covered: zero pages and unallocated ranges cost next to nothing
    // to send, and counting them made a slow link look tens of times faster than it was, so
    // a small dirty set seemed to fit the downtime budget. The whole duration, so a round
    // that only filled socket buffers does not make the link look faster either.
    progress.bandwidth = static_cast<uint64_t>(
        static_cast<double>(sender.transferred()) /
        std::max(1e-4, std::chrono::duration<double>(Clock::now() - started).count()));
    dirty = machine.take_dirty_pages();
    const uint64_t dirty_pages = count_pages(dirty);
    const uint64_t dirty_disk = disks.take_dirty();
    const uint64_t dirty_bytes = dirty_pages * kPageBytes + dirty_disk;
    progress.dirty_rate = static_cast<uint64_t>(static_cast<double>(dirty_bytes) / seconds);
    report("copying", dirty_bytes);
    ++progress.round;
    const double estimate_ms = static_cast<double>(dirty_bytes) * 1000.0 /
                               std::max(1.0, static_cast<double>(progress.bandwidth));
    // A rest that fits the budget but is still shrinking fast (under half of what the last
    // round sent) goes while the guest runs: the next rest is only what the guest dirties
    // during that short round. An idle guest's rest after round 0 (its timers and stacks over
    // the whole first round: 50-80 pages here) took 1-5 ms of the downtime to send.
    const bool shrinking = dirty_bytes > kSettledRestBytes && dirty_bytes * 2 < previous_dirty;
    if ((estimate_ms <= static_cast<double>(options.max_downtime.count()) && !shrinking) ||
        progress.round >= options.max_rounds) {
      break;
    }
    // Auto-converge: the guest dirtied at least half of what the last round sent, so more
    // rounds would not shrink the rest; slow its vCPUs, harder each time.
    if (progress.round >= 2 && dirty_bytes * 2 >= previous_dirty && throttle < 99) {
      throttle = std::min(99u, throttle == 0 ? 20u : throttle + 20u);
      machine.set_vcpu_throttle(throttle);
    }
    previous_dirty = dirty_bytes;
    round_start = Clock::now();
    sender.set_round(progress.round);
    if (auto sent = disks.send_dirty(); !sent) return give_up(sent.error());
    if (auto sent = send_bitmap(sender, dirty, hooks.cancelled); !sent) {
      return give_up(sent.error());
    }
  }

  // Switchover: the guest stops here.
  const auto paused_at = Clock::now();
  PhaseTimes phases;
  machine.quiesce();
  merge(dirty, machine.take_dirty_pages());
  phases.mark("quiesce");
  // The disks' I/O threads are drained: their last writes are in the dirty chunks.
  report("switchover", count_pages(dirty) * kPageBytes + disks.take_dirty());
  auto abandon = [&](Error error, bool disks_released) -> Result<LiveMigrationResult> {
    if (disks_released && hooks.reacquire_disks) {
      if (auto taken = hooks.reacquire_disks(); !taken) {
        // The destination may hold them: running here could corrupt them. Stay stopped.
        machine.set_vcpu_throttle(0);
        machine.stop_dirty_logging();
        return fail(ErrorCode::kIo,
                    fmt::format("{}; and the disks' locks could not be taken back ({}), so the "
                                "VM stays stopped here",
                                error.message(), taken.error().message()));
      }
    }
    machine.set_vcpu_throttle(0);
    machine.stop_dirty_logging();
    machine.release();
    return fail(std::move(error));
  };
  if (auto sent = disks.send_dirty(); !sent) return abandon(sent.error(), false);
  if (!hooks.copied_disks.empty()) phases.mark("last_disk_chunks");
  sender.set_round(progress.round + 1);
  if (auto sent = send_bitmap(sender, dirty, {}); !sent) return abandon(sent.error(), false);
  if (auto ended = sender.end_lanes(options.lanes); !ended) return abandon(ended.error(), false);
  phases.mark("last_pages");
  const std::vector<std::byte> stream = encode_machine_stream(machine);
  phases.mark("machine_state_encode");
  if (auto sent = sender.send(make_message(MessageType::kState, stream)); !sent) {
    return abandon(sent.error(), false);
  }
  phases.mark("machine_state_send");
  if (hooks.release_disks) {
    if (auto released = hooks.release_disks(); !released) return abandon(released.error(), false);
    phases.mark("disks_release");
  }
  if (auto sent = sender.send(make_message(MessageType::kSwitchover)); !sent) {
    return abandon(sent.error(), true);
  }
  auto reply = read_frame(link, static_cast<int>(options.reply_timeout.count()));
  phases.mark("destination_answer");
  if (!reply) {
    return abandon(Error(ErrorCode::kIo, fmt::format("no answer from the destination ({})",
                                                      reply.error().message())),
                   true);
  }
  auto type = message_type(*reply);
  if (!type) return abandon(type.error(), true);
  if (*type != MessageType::kStarted) {
    auto body = message_json(*reply);
    const std::string why = body ? body->value("error", std::string("no reason given"))
                                 : std::string("an answer that is not JSON");
    return abandon(Error(ErrorCode::kIo, fmt::format("the destination did not start the VM: {}", why)),
                   true);
  }
  machine.stop_dirty_logging();
  LiveMigrationResult result;
  // The destination's own breakdown of its answer's wait, when it sent one (a peer's figures:
  // checked, and left out when they do not parse; the migration succeeded either way).
  result.switchover.append(phases, "source.");
  if (auto body = message_json(*reply); body && body->is_object() && body->contains("phases")) {
    if (auto theirs = PhaseTimes::from_json((*body)["phases"])) {
      result.switchover.append(*theirs, "destination.");
    }
  }
  result.rounds = progress.round;
  result.transferred_bytes = sender.transferred();
  result.downtime = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - paused_at);
  result.total = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  return result;
}

}  // namespace lamina::migration
