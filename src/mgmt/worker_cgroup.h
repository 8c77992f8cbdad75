#pragma once
// WorkerCgroup: the memory cgroup one VM's worker runs in, so the kernel bounds what the VM
// can take from the host (guest RAM plus the worker's own room) and charges its page cache to
// it, beyond what RLIMIT_AS (address space) can say.
//
// Where: below laminad's own memory cgroup, `lamina/VM`. cgroup v2 is used when its hierarchy
// offers the memory controller (memory.max, and memory.swap.max 0 so the limit is not dodged
// through swap); otherwise cgroup v1's memory hierarchy (memory.limit_in_bytes, and
// memory.memsw.limit_in_bytes where swap accounting is on). On v2, "no internal processes"
// means laminad may first have to move itself into a leaf (`laminad`) of its own cgroup, as a
// systemd unit with Delegate=yes allows. A host with neither, or a laminad without the right
// to create cgroups (an ordinary user without delegation), gets none: create() says why and
// the worker runs with RLIMIT_AS alone.
//
// Ownership: a value naming the folder; remove() deletes it once the worker has exited.
// Thread-safety: plain values; the file system serializes.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "base/error.h"

namespace lamina::mgmt {

class WorkerCgroup {
 public:
  enum class Version { kV1, kV2 };

  // The cgroup for `vm_name` with its memory limit set (made, or reused from an earlier run).
  // kUnsupported when the host offers no memory cgroup laminad may use, with the reason.
  static Result<WorkerCgroup> create(const std::string& vm_name, uint64_t memory_limit);
  // Deletes the VM's cgroup folder if there is one and nothing runs in it (a worker that has
  // exited, or one from a laminad before this one). Returns how many times the kernel's OOM
  // killer struck in it, read just before; nullopt without a cgroup or a counter.
  static std::optional<uint64_t> remove(const std::string& vm_name);

  // Moves process `pid` (with its threads) into the cgroup.
  [[nodiscard]] Result<void> add(pid_t pid) const;

  const std::filesystem::path& path() const { return path_; }
  Version version() const { return version_; }

 private:
  WorkerCgroup(std::filesystem::path path, Version version)
      : path_(std::move(path)), version_(version) {}

  std::filesystem::path path_;
  Version version_;
};

// The folder `lamina` below laminad's own memory cgroup, and the hierarchy it is in; exposed
// for tests. kUnsupported when the host has no memory cgroup.
struct CgroupParent {
  std::filesystem::path folder;
  WorkerCgroup::Version version;
};
Result<CgroupParent> find_cgroup_parent(const std::string& proc_self_cgroup,
                                        const std::string& proc_mounts);
// The "oom_kill N" line of memory.events (v2) or memory.oom_control (v1); exposed for tests.
std::optional<uint64_t> parse_oom_kills(const std::string& text);

}  // namespace lamina::mgmt
