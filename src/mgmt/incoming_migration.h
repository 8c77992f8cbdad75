#pragma once
// IncomingMigration: the destination side of a live migration, in laminad (protocol:
// migration/migration_protocol.h). An offer creates the VM's definition here (checked like any
// API create: a name in use, a definition this host cannot run, are refused with the reason)
// and a state file in memory (memfd) laid out as a checkpoint (migration/machine_state.h).
// RAM pages are written into it as they arrive (every address checked against the VM's RAM
// layout); at the switchover the machine stream and header complete it and the VM starts from
// it exactly as from a checkpoint: a sandboxed worker (launched when the offer came, so the
// guest does not wait for a process to start), the disks opened (and locked) now that the
// source has released them. The device and CPU state is parsed only there, in the
// worker.
//
// With --storage copy the offer lists each disk's format and size: empty images are created
// at the definition's paths (which must not exist), the source's chunks are written into them,
// and they are closed at the switchover, before the VM's worker opens them.
//
// A migration that ends before the VM started (link cut, bad stream, the source gave up)
// removes the definition and the images it created: nothing is left behind.
//
// Several connections: the offer asks for up to kMaxConnections; the kAccept grants them
// with a join id (MigrationJoins), and each further connection (a lane, joined with kJoin)
// brings pages only, ended by kLaneEnd. Copies of a page from different rounds may arrive out
// of order across connections: the latest round's is kept (migration/page_rounds.h). The
// switchover waits for every lane's end.
//
// Ownership: owns the memfd; borrows the service; shared by its connections. Thread-safety:
// receive() and close() on the main connection's thread (the answer to kSwitchover is sent
// before close(), which records the start); join_lane()/receive_lane() on the
// lanes' threads.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"
#include "base/unique_fd.h"
#include "migration/page_rounds.h"
#include "migration/phase_times.h"
#include "mgmt/vm_service.h"
#include "storage/block_device.h"

namespace lamina::mgmt {

class IncomingMigration {
 public:
  // The first message: a kOffer. Returns the migration and the kAccept to send, or (no
  // migration) the kRefuse to send.
  struct Opened {
    std::shared_ptr<IncomingMigration> migration;
    std::vector<std::byte> reply;
  };
  static Opened offer(VmService& service, std::span<const std::byte> message);
  ~IncomingMigration();

  // A further connection: its kJoin body's "lane" must be one granted and not joined yet.
  Result<void> join_lane(uint32_t lane);
  // A lane's messages: kPages, then kLaneEnd (true: the lane is done).
  Result<bool> receive_lane(uint32_t lane, std::span<const std::byte> message);
  // The main connection ended: a migration whose VM has not started here is undone now (its
  // lanes end at their next message).
  void close();
  IncomingMigration(const IncomingMigration&) = delete;
  IncomingMigration& operator=(const IncomingMigration&) = delete;

  // Every later message. A reply to send (after kSwitchover: kStarted or kFailed, and the
  // migration is over), nothing, or an error that ends the connection.
  Result<std::optional<std::vector<std::byte>>> receive(std::span<const std::byte> message);
  bool finished() const { return finished_.load(); }

  // An image --storage copy creates here.
  struct CopiedDisk {
    std::string path;
    std::unique_ptr<storage::BlockDevice> image;  // closed at the switchover
  };

 private:
  IncomingMigration(VmService& service, std::string name, std::vector<RamRegion> regions,
                    UniqueFd state, std::vector<CopiedDisk> disks, LaunchedWorker worker,
                    uint32_t connections, std::string join_id);
  Result<void> write_pages(std::span<const std::byte> message);
  Result<void> write_disk_chunk(std::span<const std::byte> message);
  std::vector<std::byte> switchover();
  // After a start: the definition is kept (its marker goes) and the "completed" event.
  void record_start();
  // Removes what the migration created here (once; not after the VM started).
  void discard(const std::string& why);

  VmService& service_;
  std::string name_;
  std::vector<RamRegion> regions_;
  uint64_t ram_length_ = 0;
  UniqueFd state_;  // the memfd
  std::vector<CopiedDisk> disks_;
  // The VM's worker, launched at the offer so that the switchover only hands it the VM (none
  // when launching failed: the switchover then starts one).
  LaunchedWorker worker_;
  std::vector<std::byte> stream_;
  bool have_stream_ = false;
  std::atomic<bool> finished_ = false;
  bool started_ = false;  // the VM runs here: keep its definition
  bool recorded_ = false;  // record_start() ran
  migration::PhaseTimes switchover_phases_;
  uint64_t start_ms_ = 0;  // kSwitchover to the VM started here
  std::atomic<bool> discarded_ = false;
  std::atomic<uint64_t> pages_ = 0;
  migration::PageRounds rounds_;
  // Lanes 1..connections_-1: joined, ended.
  const uint32_t connections_;
  const std::string join_id_;
  std::mutex lanes_mutex_;
  std::condition_variable lanes_changed_;
  std::vector<bool> lane_joined_;
  uint32_t lanes_ended_ = 0;
};

}  // namespace lamina::mgmt
