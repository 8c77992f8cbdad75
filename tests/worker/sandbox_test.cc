#include "worker/sandbox.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <csignal>
#include <ctime>
#include <thread>

#include <gtest/gtest.h>

namespace lamina::worker {
namespace {

// Each case forks (a death test), installs the worker's filter in the child and makes one call.
void restrict_or_die() {
  if (!restrict_process(0)) ::_exit(99);
}

TEST(SandboxFilter, AllowlistStaysWithinBudget) {
  // ARCHITECTURE.md: at most 47 syscalls for the worker in all (41 before the VNC display, 44
  // before getpid for the KVM kick and restart_syscall for a stopped and continued worker, 46
  // before preadv for virtio-blk reads of scattered guest pages).
  EXPECT_LE(syscall_allowlist().size(), 47u);
}

TEST(SandboxFilter, AllowedCallsWork) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        // write, read, futex and thread creation (clone with CLONE_THREAD) are the worker's own.
        std::thread([] {}).join();
        (void)!::write(2, "", 0);
        ::_exit(0);
      },
      testing::ExitedWithCode(0), "");
}

// The KVM backend kicks a vCPU thread out of KVM_RUN with pthread_kill (getpid + tgkill).
void kick_a_thread() {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  ::sigaction(SIGUSR1, &action, nullptr);
  restrict_or_die();
  std::thread thread([] { ::usleep(200 * 1000); });
  ::pthread_kill(thread.native_handle(), SIGUSR1);
  thread.join();
  ::_exit(0);
}

// A timed sleep that a SIGSTOP/SIGCONT (from a helper forked before the filter) interrupts
// resumes through restart_syscall.
void sleep_through_a_stop() {
  const pid_t sandboxed = ::getpid();
  if (::fork() == 0) {
    ::usleep(100 * 1000);
    ::kill(sandboxed, SIGSTOP);
    ::usleep(100 * 1000);
    ::kill(sandboxed, SIGCONT);
    ::_exit(0);
  }
  restrict_or_die();
  const timespec nap{0, 400 * 1000 * 1000};
  ::clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, nullptr);
  ::_exit(0);
}

TEST(SandboxFilter, KickingAThreadWorks) {
  EXPECT_EXIT(kick_a_thread(), testing::ExitedWithCode(0), "");
}

TEST(SandboxFilter, AStopDuringASleepIsSurvived) {
  EXPECT_EXIT(sleep_through_a_stop(), testing::ExitedWithCode(0), "");
}

TEST(SandboxFilter, OpeningAFileKills) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        ::open("/etc/passwd", O_RDONLY);
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall openat");
}

char kTrue[] = "/bin/true";
char* kTrueArguments[] = {kTrue, nullptr};

TEST(SandboxFilter, ExecveKills) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        ::execve("/bin/true", kTrueArguments, nullptr);
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall execve");
}

TEST(SandboxFilter, SocketKills) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        ::socket(AF_INET, SOCK_STREAM, 0);
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall socket");
}

TEST(SandboxFilter, PtraceKills) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        ::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr);
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall ptrace");
}

TEST(SandboxFilter, ForkingAProcessKills) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        // fork() is clone without CLONE_THREAD (glibc's clone3 attempt gets ENOSYS first).
        ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall clone");
}

// The guest-facing threads' filter: stacked in one thread, it takes accept, recvmsg and (on the
// built-in CPU) ioctl from that thread and the threads it starts, and leaves the others alone.
TEST(GuestThreadFilter, AThreadLosesOnlyItsDenylist) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        std::thread([] {
          if (!restrict_guest_thread(false)) ::_exit(98);
          // Still allowed: writing, threads (a device's I/O thread started from here).
          (void)!::write(2, "", 0);
          std::thread([] {}).join();
        }).join();
        // The main thread kept its ioctl.
        int pending = 0;
        ::ioctl(2, FIONREAD, &pending);
        ::_exit(0);
      },
      testing::ExitedWithCode(0), "");
}

// A disk's I/O thread reads a request's scattered guest pages with one preadv
// (BlockDevice::read_scattered): allowed under both filters.
TEST(GuestThreadFilter, AVectoredDiskReadIsAllowed) {
  EXPECT_EXIT(
      {
        const int fd = ::open("/dev/zero", O_RDONLY | O_CLOEXEC);
        if (fd < 0) ::_exit(97);
        restrict_or_die();
        std::thread([fd] {
          if (!restrict_guest_thread(false)) ::_exit(98);
          char first[3], second[5];
          iovec pieces[] = {{first, sizeof(first)}, {second, sizeof(second)}};
          if (::preadv(fd, pieces, 2, 0) != 8) ::_exit(96);
        }).join();
        ::_exit(0);
      },
      testing::ExitedWithCode(0), "");
}

TEST(GuestThreadFilter, IoctlOnTheBuiltInCpuKills) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        std::thread([] {
          if (!restrict_guest_thread(false)) ::_exit(98);
          int pending = 0;
          ::ioctl(2, FIONREAD, &pending);
        }).join();
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall ioctl");
}

TEST(GuestThreadFilter, ThreadsItStartsInheritIt) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        std::thread([] {
          if (!restrict_guest_thread(true)) ::_exit(98);
          std::thread([] { ::accept4(0, nullptr, nullptr, 0); }).join();
        }).join();
        ::_exit(0);
      },
      testing::KilledBySignal(SIGSYS), "forbidden syscall accept4");
}

TEST(GuestThreadFilter, KvmKeepsIoctl) {
  EXPECT_EXIT(
      {
        restrict_or_die();
        std::thread([] {
          if (!restrict_guest_thread(true)) ::_exit(98);
          int pending = 0;
          ::ioctl(2, FIONREAD, &pending);
        }).join();
        ::_exit(0);
      },
      testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace lamina::worker
