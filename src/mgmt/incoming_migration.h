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
// Ownership: owns the memfd; borrows the service. Thread-safety: one connection's thread.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/guest_memory.h"
#include "base/unique_fd.h"
#include "mgmt/vm_service.h"
#include "storage/block_device.h"

namespace lamina::mgmt {

class IncomingMigration {
 public:
  // The first message: a kOffer. Returns the migration and the kAccept to send, or (no
  // migration) the kRefuse to send.
  struct Opened {
    std::unique_ptr<IncomingMigration> migration;
    std::vector<std::byte> reply;
  };
  static Opened offer(VmService& service, std::span<const std::byte> message);
  ~IncomingMigration();
  IncomingMigration(const IncomingMigration&) = delete;
  IncomingMigration& operator=(const IncomingMigration&) = delete;

  // Every later message. A reply to send (after kSwitchover: kStarted or kFailed, and the
  // migration is over), nothing, or an error that ends the connection.
  Result<std::optional<std::vector<std::byte>>> receive(std::span<const std::byte> message);
  bool finished() const { return finished_; }

  // An image --storage copy creates here.
  struct CopiedDisk {
    std::string path;
    std::unique_ptr<storage::BlockDevice> image;  // closed at the switchover
  };

 private:
  IncomingMigration(VmService& service, std::string name, std::vector<RamRegion> regions,
                    UniqueFd state, std::vector<CopiedDisk> disks, LaunchedWorker worker);
  Result<void> write_pages(std::span<const std::byte> message);
  Result<void> write_disk_chunk(std::span<const std::byte> message);
  std::vector<std::byte> switchover();
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
  bool finished_ = false;
  bool started_ = false;  // the VM runs here: keep its definition
  bool discarded_ = false;
  uint64_t pages_ = 0;
};

}  // namespace lamina::mgmt
