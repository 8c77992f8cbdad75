#pragma once
// The sending side of live migration (pre-copy), run by the source worker on a machine that
// keeps running: RAM goes in rounds (the first one all of it, zero pages skipped; then the
// pages the guest dirtied meanwhile, from GuestMemory's dirty log), compressed with zstd,
// until what is left fits the downtime budget at the measured bandwidth (or the round limit
// is reached); a guest that dirties faster than the link carries is throttled
// (auto-converge). With --storage copy the disks go first, whole (empty ranges skipped), and
// then, with each RAM round, the 64 KiB chunks the guest rewrote (block dirty tracking). Then the machine is quiesced, the last pages and the machine stream go,
// the disks are flushed and their locks released, and the destination says whether it runs
// the VM now. With lanes (further connections) the pages go over them in parallel, each
// message marked with its round. Protocol: migration_protocol.h.
//
// On success the machine stays quiesced (the caller ends it: the VM runs elsewhere). On any
// failure (link cut, destination refused or died, timeout) the disks' locks are taken back,
// logging and throttling stop and the machine is released: the VM runs on as if nothing
// happened.
//
// Thread-safety: one call per machine, from a host thread while Machine::run() runs.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "machine/machine.h"
#include "migration/phase_times.h"
#include "storage/tracked_block_device.h"

namespace lamina::migration {

struct LiveMigrationOptions {
  // The longest the guest may be stopped at switchover, by the estimate from bandwidth.
  std::chrono::milliseconds max_downtime{50};
  uint32_t max_rounds = 30;
  // --storage copy: the disks travel with the VM (hooks.copied_disks) instead of being shared.
  bool copy_storage = false;
  // Further connections to the destination (borrowed; laminad joined them to the migration)
  // that carry the pages, each compressed and written by a thread of its own; empty: the
  // pages go on the main link.
  std::vector<int> lanes;
  // How long to wait for the destination's answer after the switchover.
  std::chrono::milliseconds reply_timeout{60000};
};

struct LiveMigrationProgress {
  std::string phase;  // "disks" (--storage copy's first pass), "copying", "switchover"
  uint32_t round = 0;
  uint64_t ram_bytes = 0;          // the VM's RAM
  uint64_t disk_bytes = 0;         // the copied disks' virtual sizes (--storage copy)
  uint64_t disk_copied_bytes = 0;  // of which the first pass has read so far
  uint64_t transferred_bytes = 0;  // on the link so far (compressed)
  uint64_t remaining_bytes = 0;    // dirty RAM and disk chunks still to send
  uint64_t dirty_rate = 0;         // bytes/s the guest dirtied in the last round
  uint64_t bandwidth = 0;          // RAM bytes/s sent in the last round
  unsigned throttle_percent = 0;
};

struct LiveMigrationHooks {
  // At switchover, after the machine is quiesced: flush the disks and release their write
  // locks; reacquire them if the destination does not take the VM.
  std::function<Result<void>()> release_disks;
  std::function<Result<void>()> reacquire_disks;
  // True when the VM is stopping on its own (guest poweroff): the migration gives up.
  std::function<bool()> cancelled;
  std::function<void(const LiveMigrationProgress&)> progress;
  // --storage copy: every disk of the VM, in the definition's order (the kDiskChunk index);
  // empty with shared storage.
  std::vector<storage::TrackedBlockDevice*> copied_disks;
};

struct LiveMigrationResult {
  uint32_t rounds = 0;
  uint64_t transferred_bytes = 0;
  // Quiesce to the destination's answer, which it sends once the VM's first machine there is
  // built and restored and its vCPUs are about to run.
  std::chrono::microseconds downtime{0};
  // Where the downtime went: "source.*" phases, then the destination's ("destination.*").
  PhaseTimes switchover;
  std::chrono::milliseconds total{0};
};

// `link`: the stream socket to the destination (through laminad), already past the offer.
[[nodiscard]] Result<LiveMigrationResult> migrate_out(machine::Machine& machine, int link,
                                                      const LiveMigrationOptions& options,
                                                      const LiveMigrationHooks& hooks);

}  // namespace lamina::migration
