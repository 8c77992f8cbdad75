#include "migration/live_migration.h"

#include <fmt/format.h>

#include <bit>
#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "migration/machine_state.h"
#include "migration/migration_protocol.h"
#include "storage/host_file.h"

namespace lamina::migration {
namespace {

using Clock = std::chrono::steady_clock;

// Sends pages in kPages messages of up to kMaxPagesPerMessage.
class PageSender {
 public:
  PageSender(GuestMemory& memory, int link) : memory_(memory), link_(link) {}

  // `skip_zero`: the first round, where the destination's RAM is all zeros already.
  Result<void> add(uint64_t guest_physical, bool skip_zero) {
    const std::byte* host = memory_.host_pointer(guest_physical, kPageBytes);
    if (host == nullptr) return {};  // a marked address outside RAM (MMIO): nothing to send
    const bool zero = storage::is_all_zero({host, kPageBytes});
    if (zero && skip_zero) return {};
    pages_.push_back({guest_physical, zero ? std::span<const std::byte>()
                                           : std::span<const std::byte>(host, kPageBytes)});
    ++sent_pages_;
    if (pages_.size() == kMaxPagesPerMessage) return flush();
    return {};
  }

  Result<void> flush() {
    if (pages_.empty()) return {};
    const std::vector<std::byte> message = encode_pages(pages_);
    pages_.clear();
    transferred_ += message.size() + 4;
    return write_frame(link_, message);
  }

  Result<void> send(std::span<const std::byte> message) {
    transferred_ += message.size() + 4;
    return write_frame(link_, message);
  }

  uint64_t transferred() const { return transferred_; }
  uint64_t sent_pages() const { return sent_pages_; }

 private:
  GuestMemory& memory_;
  int link_;
  std::vector<Page> pages_;
  uint64_t transferred_ = 0;
  uint64_t sent_pages_ = 0;
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
  PageSender sender(memory, link);
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
  uint64_t previous_dirty = 0;
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
    if (estimate_ms <= static_cast<double>(options.max_downtime.count()) ||
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
    if (auto sent = disks.send_dirty(); !sent) return give_up(sent.error());
    if (auto sent = send_bitmap(sender, dirty, hooks.cancelled); !sent) {
      return give_up(sent.error());
    }
  }

  // Switchover: the guest stops here.
  const auto paused_at = Clock::now();
  machine.quiesce();
  merge(dirty, machine.take_dirty_pages());
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
  if (auto sent = send_bitmap(sender, dirty, {}); !sent) return abandon(sent.error(), false);
  const std::vector<std::byte> stream = encode_machine_stream(machine);
  if (auto sent = sender.send(make_message(MessageType::kState, stream)); !sent) {
    return abandon(sent.error(), false);
  }
  if (hooks.release_disks) {
    if (auto released = hooks.release_disks(); !released) return abandon(released.error(), false);
  }
  if (auto sent = sender.send(make_message(MessageType::kSwitchover)); !sent) {
    return abandon(sent.error(), true);
  }
  auto reply = read_frame(link, static_cast<int>(options.reply_timeout.count()));
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
  result.rounds = progress.round;
  result.transferred_bytes = sender.transferred();
  result.downtime = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - paused_at);
  result.total = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  return result;
}

}  // namespace lamina::migration
