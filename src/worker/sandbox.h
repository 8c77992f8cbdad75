#pragma once
// The worker's sandbox (ARCHITECTURE.md "Worker sandbox"): entered by lamina-vm after it has
// opened every host resource its VM needs and before the first guest instruction runs.
//   1. new mount, IPC, UTS and network namespaces (the PID namespace, and a user namespace
//      when laminad is not root, come from how laminad starts the worker: spawn_worker);
//   2. an empty read-only tmpfs as its root (pivot_root): no host path can be opened any more;
//   3. privileges dropped: as real root, to the unprivileged uid/gid given; inside a user
//      namespace, every capability (bounding set included);
//   4. no_new_privs, not dumpable (no core dumps of guest RAM, no ptrace by same-uid peers),
//      RLIMIT_CORE 0 and the address-space limit given;
//   5. the seccomp-BPF allowlist (syscall_allowlist()): any other syscall kills the process with
//      SIGSYS.
//
// Stateless functions; call from a single-threaded process (before the VM's threads exist),
// since namespace changes and uid changes apply to the calling thread first.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <sys/types.h>

#include "base/error.h"

namespace lamina::worker {

struct SandboxOptions {
  // The ids to become when the worker runs as real root (laminad as root); ignored inside a
  // user namespace, where the worker's ids are already mapped to an unprivileged user.
  std::optional<std::pair<uid_t, gid_t>> drop_to;
  uint64_t address_space_limit = 0;  // RLIMIT_AS in bytes; 0 leaves it unlimited
  // enter_isolated_namespaces() ran: step 1 makes only the mount namespace.
  bool namespaces_entered = false;
};

[[nodiscard]] Result<void> enter_sandbox(const SandboxOptions& options);

// Step 1's IPC, UTS and network namespaces alone, ahead of the rest: a worker enters them
// while it waits for its VM, since nothing it opens for the VM needs the host's network
// (laminad hands it sockets, taps and switch ports as descriptors), and making a network
// namespace (about 0.3 ms) is then no part of a migration's switchover.
[[nodiscard]] Result<void> enter_isolated_namespaces();

// Steps 4 and 5 alone (what enter_sandbox ends with); a test applies them to a child process.
[[nodiscard]] Result<void> restrict_process(uint64_t address_space_limit);
[[nodiscard]] Result<void> install_syscall_filter();

// The names of the syscalls the filter allows (for ARCHITECTURE.md and the tests).
std::span<const std::string_view> syscall_allowlist();

// The guest-facing threads' tighter filter, stacked on the process's for the calling thread
// (and the threads it starts) only: a vCPU thread runs the code a guest steers (instruction
// emulation, device registers) and starts the device I/O threads at the guest's DRIVER_OK, so
// both lose what only the control and console threads need: accepting connections, receiving
// descriptors, and on the built-in CPU (kvm false) every ioctl. Denied calls trap like the
// process filter's (the worker dies of SIGSYS, naming the call).
[[nodiscard]] Result<void> restrict_guest_thread(bool kvm);
std::span<const std::string_view> guest_thread_denylist(bool kvm);

}  // namespace lamina::worker
