#include "worker/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace lamina::worker {
namespace {

Error system_error(std::string_view what) {
  return Error(ErrorCode::kIo, fmt::format("sandbox: {}: {}", what, std::strerror(errno)));
}

// What the worker does once sandboxed, and nothing else. Why each is there:
constexpr std::array<std::string_view, 47> kAllowlist = {
    // guest I/O, disk images, sockets and eventfds already open (fcntl: O_NONBLOCK on a
    // console client; lseek: SEEK_DATA/SEEK_HOLE in sparse images; preadv: a virtio-blk
    // read's guest pages in one call, BlockDevice::read_scattered)
    "read", "write", "pread64", "preadv", "pwrite64", "close", "lseek", "newfstatat", "fcntl",
    "fdatasync", "fsync", "fallocate", "ftruncate",
    // live migration hands a disk's lock to the destination and takes it back on failure
    "flock",
    // the control channel, switch ports, the console socket and its one client
    "sendmsg", "recvmsg", "sendto", "recvfrom", "accept", "accept4",
    // the VNC display (libvncserver) on the socket laminad opened: it waits in select()
    // (glibc: pselect6), and rfbNewClient names each client (getpeername) and sets TCP_NODELAY
    "pselect6", "getpeername", "setsockopt",
    // waiting: I/O threads poll their fds and eventfds, vCPUs sleep on futexes
    "poll", "futex", "clock_nanosleep", "eventfd2",
    // memory: guest RAM and device buffers of a rebooted machine, thread stacks
    "mmap", "munmap", "mprotect", "madvise", "mremap", "brk",
    // threads of a rebooted machine (clone only with CLONE_THREAD; see below); glibc installs
    // its thread-cancellation handler and the KVM kick handler is installed per vCPU
    "clone", "set_robust_list", "rseq", "exit", "exit_group", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigaction",
    // a timed sleep (clock_nanosleep, futex or poll with a timeout) interrupted by a stop goes
    // on through restart_syscall (signal(7)): without it a worker stopped and continued
    // (SIGSTOP/SIGCONT, a debugger attaching) died of SIGSYS
    "restart_syscall",
    // vCPU kicks (a signal to one thread: glibc's pthread_kill asks getpid, then tgkill), KVM
    // and tap ioctls, virtio-rng
    "getpid", "tgkill", "ioctl", "getrandom",
    // a vCPU thread stacks its tighter filter (restrict_guest_thread); a filter can only take
    // away, and the strictest answer of all filters wins
    "seccomp"};

// Appends the decimal digits of value to buffer at *used (no allocation: signal context).
void append_number(char* buffer, size_t& used, size_t size, unsigned long value) {
  char digits[24];
  size_t count = 0;
  do {
    digits[count++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0 && count < sizeof(digits));
  while (count > 0 && used < size) buffer[used++] = digits[--count];
}

void append_text(char* buffer, size_t& used, size_t size, const char* text) {
  while (*text != '\0' && used < size) buffer[used++] = *text++;
}

// SIGSYS from the filter: says which syscall on stderr (the worker's log, which laminad reads
// when the worker dies of SIGSYS), then makes the same call again. The handler was installed
// with SA_RESETHAND | SA_NODEFER, so that second trap takes the default action and ends the
// whole process with SIGSYS. Only async-signal-safe calls here.
void report_forbidden_syscall(int, siginfo_t* info, void*) {
  char line[128];
  size_t used = 0;
  append_text(line, used, sizeof(line), "lamina-vm: forbidden syscall ");
  const char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, info->si_syscall);
  append_text(line, used, sizeof(line), name ? name : "?");
  append_text(line, used, sizeof(line), " (");
  append_number(line, used, sizeof(line), static_cast<unsigned long>(info->si_syscall));
  append_text(line, used, sizeof(line), ")\n");
  (void)!::write(2, line, used);
  ::syscall(info->si_syscall, 0, 0, 0, 0, 0, 0);
  ::_exit(159);  // not reached: 128 + SIGSYS, should the second trap not end the process
}

}  // namespace

std::span<const std::string_view> syscall_allowlist() { return kAllowlist; }

Result<void> install_syscall_filter() {
  // Anything not listed traps into report_forbidden_syscall, which names it and ends the whole
  // process with SIGSYS.
  struct sigaction action {};
  action.sa_sigaction = report_forbidden_syscall;
  action.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
  sigemptyset(&action.sa_mask);
  if (::sigaction(SIGSYS, &action, nullptr) != 0) return fail(system_error("sigaction SIGSYS"));
  std::unique_ptr<void, decltype(&seccomp_release)> filter(seccomp_init(SCMP_ACT_TRAP),
                                                           &seccomp_release);
  if (!filter) return fail(ErrorCode::kInternal, "sandbox: seccomp_init failed");
  for (std::string_view name : kAllowlist) {
    const int number = seccomp_syscall_resolve_name(std::string(name).c_str());
    if (number == __NR_SCMP_ERROR) {
      return fail(ErrorCode::kInternal, fmt::format("sandbox: unknown syscall {}", name));
    }
    int added;
    if (name == "clone") {
      // New threads only: a process (fork) could escape the filter's bookkeeping of children.
      added = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, number, 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
    } else {
      added = seccomp_rule_add(filter.get(), SCMP_ACT_ALLOW, number, 0);
    }
    if (added != 0) {
      return fail(ErrorCode::kInternal, fmt::format("sandbox: seccomp rule for {}", name));
    }
  }
  // glibc tries clone3 first and falls back to clone on ENOSYS; clone3's flags sit in memory a
  // filter cannot read, so it is refused without killing.
  if (seccomp_rule_add(filter.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0) {
    return fail(ErrorCode::kInternal, "sandbox: seccomp rule for clone3");
  }
  if (const int loaded = seccomp_load(filter.get()); loaded != 0) {
    errno = -loaded;
    return fail(system_error("seccomp_load"));
  }
  return {};
}

namespace {

// What the guest-facing threads lose (restrict_guest_thread); ioctl last, kept with KVM.
constexpr std::array<std::string_view, 4> kGuestThreadDenylist = {"accept", "accept4", "recvmsg",
                                                                  "ioctl"};

}  // namespace

std::span<const std::string_view> guest_thread_denylist(bool kvm) {
  return std::span(kGuestThreadDenylist).first(kGuestThreadDenylist.size() - (kvm ? 1 : 0));
}

Result<void> restrict_guest_thread(bool kvm) {
  // A second filter for this thread alone (no TSYNC): the kernel runs both, the stricter
  // answer wins, so allowing the rest here allows exactly the process filter's list.
  std::unique_ptr<void, decltype(&seccomp_release)> filter(seccomp_init(SCMP_ACT_ALLOW),
                                                           &seccomp_release);
  if (!filter) return fail(ErrorCode::kInternal, "sandbox: seccomp_init failed");
  // no_new_privs is set already (restrict_process); setting it again is a prctl, not allowed.
  if (seccomp_attr_set(filter.get(), SCMP_FLTATR_CTL_NNP, 0) != 0) {
    return fail(ErrorCode::kInternal, "sandbox: seccomp attribute NNP");
  }
  for (std::string_view name : guest_thread_denylist(kvm)) {
    const int number = seccomp_syscall_resolve_name(std::string(name).c_str());
    if (number == __NR_SCMP_ERROR || seccomp_rule_add(filter.get(), SCMP_ACT_TRAP, number, 0) != 0) {
      return fail(ErrorCode::kInternal, fmt::format("sandbox: seccomp rule for {}", name));
    }
  }
  if (const int loaded = seccomp_load(filter.get()); loaded != 0) {
    errno = -loaded;
    return fail(system_error("seccomp_load (guest thread)"));
  }
  return {};
}

Result<void> restrict_process(uint64_t address_space_limit) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail(system_error("no_new_privs"));
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return fail(system_error("dumpable"));
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) return fail(system_error("RLIMIT_CORE"));
  if (address_space_limit != 0) {
    const rlimit limit{address_space_limit, address_space_limit};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) return fail(system_error("RLIMIT_AS"));
  }
  return install_syscall_filter();
}

namespace {

// An empty read-only tmpfs becomes "/"; the old root is detached, so no host path resolves.
Result<void> pivot_to_empty_root() {
  // Nothing this namespace mounts propagates back to the host.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return fail(system_error("making mounts private"));
  }
  // Any existing directory serves as the mount point: the tmpfs covers it in this namespace.
  const char* kNewRoot = "/tmp";
  if (::mount("lamina-vm", kNewRoot, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=16k,nr_inodes=8,mode=0755") != 0) {
    return fail(system_error("mounting the empty root"));
  }
  if (::mkdir("/tmp/old-root", 0700) != 0) return fail(system_error("mkdir old-root"));
  if (::syscall(SYS_pivot_root, kNewRoot, "/tmp/old-root") != 0) {
    return fail(system_error("pivot_root"));
  }
  if (::chdir("/") != 0) return fail(system_error("chdir /"));
  if (::umount2("/old-root", MNT_DETACH) != 0) return fail(system_error("detaching the host root"));
  if (::rmdir("/old-root") != 0) return fail(system_error("rmdir old-root"));
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV |
                                          MS_NOEXEC, nullptr) != 0) {
    return fail(system_error("making the root read-only"));
  }
  return {};
}

// Needs CAP_SETPCAP, so it runs before the uid changes.
Result<void> drop_bounding_set() {
  for (unsigned long cap = 0; cap <= CAP_LAST_CAP; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      return fail(system_error("dropping the capability bounding set"));
    }
  }
  return {};
}

Result<void> drop_capabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return fail(system_error("capset"));
  return {};
}

}  // namespace

Result<void> enter_isolated_namespaces() {
  if (::unshare(CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) != 0) {
    return fail(system_error("new IPC, UTS and network namespaces"));
  }
  return {};
}

Result<void> enter_sandbox(const SandboxOptions& options) {
  const int isolated = options.namespaces_entered ? 0 : CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
  if (::unshare(CLONE_NEWNS | isolated) != 0) return fail(system_error("new namespaces"));
  if (auto pivoted = pivot_to_empty_root(); !pivoted) return pivoted;
  if (auto dropped = drop_bounding_set(); !dropped) return dropped;
  if (options.drop_to && ::geteuid() == 0) {
    const auto [uid, gid] = *options.drop_to;
    if (::setgroups(0, nullptr) != 0) return fail(system_error("setgroups"));
    if (::setresgid(gid, gid, gid) != 0) return fail(system_error("setresgid"));
    // Leaving uid 0 clears every capability (no SECBIT_KEEP_CAPS).
    if (::setresuid(uid, uid, uid) != 0) return fail(system_error("setresuid"));
  }
  if (auto dropped = drop_capabilities(); !dropped) return dropped;
  return restrict_process(options.address_space_limit);
}

}  // namespace lamina::worker
