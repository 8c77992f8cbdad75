#pragma once
// The accelerator interface the machine runs vCPUs through: `emu` (the built-in x86-64 CPU)
// and `kvm` (the host CPU through /dev/kvm) behind the same interface. A vCPU reaches devices only through the
// CpuEnvironment the machine hands it (port I/O, MMIO, interrupt controller, clock); a KVM
// backend turns its I/O exits into the same calls, so the machine is written once.
//
// Ownership: the Accelerator borrows guest memory; each Vcpu borrows its environment and the
// accelerator; all three must outlive the vCPUs. Thread-safety: a Vcpu's run()/state()/set_state() on its own
// thread (or while it is stopped); kick(), request_*() from any thread.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/guest_memory.h"
#include "base/unique_fd.h"
#include "cpu/x86/cpu_environment.h"
#include "cpu/x86/cpu_state.h"
#include "cpu/x86/system/cpu_features.h"
#include "cpu/x86/system/cpuid_table.h"

namespace lamina::accel {

struct VcpuExit {
  enum class Kind : uint8_t {
    kYield,           // the time slice (instruction budget) ended; run again
    kHalted,          // HLT: wait for an interrupt (request_interrupt wakes), then run again
    kKicked,          // kick() from another thread
    kShutdown,        // triple fault: reset or stop the VM; `reason` says why
    kWaitForStartup,  // an AP after INIT, until startup()
  };
  Kind kind = Kind::kYield;
  std::string reason;
  uint64_t instructions = 0;  // guest instructions retired (0 when not counted)
};

// The built-in CPU's translated code (the JIT's code cache), for metrics; all zero on backends
// that translate nothing (KVM, the interpreter).
struct CodeCacheStats {
  uint64_t translations = 0;    // blocks translated so far
  uint64_t flushes = 0;         // times the cache was full and dropped everything
  uint64_t used_bytes = 0;      // host code in the cache now
  uint64_t capacity_bytes = 0;  // the cache's bound

  CodeCacheStats& operator+=(const CodeCacheStats& other) {
    translations += other.translations;
    flushes += other.flushes;
    used_bytes += other.used_bytes;
    capacity_bytes += other.capacity_bytes;
    return *this;
  }
};

class Vcpu {
 public:
  virtual ~Vcpu() = default;
  // Runs guest code for about `budget` instructions at most.
  virtual VcpuExit run(uint64_t budget) = 0;
  virtual void kick() = 0;
  // An interrupt may have become pending in the environment's controller.
  virtual void request_interrupt() = 0;
  virtual void request_nmi() = 0;
  virtual void request_init() = 0;
  virtual void startup(uint8_t vector) = 0;
  // Architectural state in the core's format (a KVM backend converts).
  virtual cpu::x86::CpuState state() const = 0;
  virtual void set_state(const cpu::x86::CpuState& state) = 0;
  // A restore (checkpoint, migration): `state` replaces everything, so INIT/SIPI requests still
  // queued (an application processor is created with one) are dropped first.
  virtual void restore_state(const cpu::x86::CpuState& state) { set_state(state); }
  // Guest RAM changed behind the vCPU (DMA, a loader): cached translations must go. Call it
  // for every vCPU (each keeps its own translations).
  virtual void invalidate_code(uint64_t physical, uint64_t length) = 0;
  // The chipset's A20 gate changed (callable from any thread). KVM has no A20 mask, so its
  // vCPUs ignore this; only firmware-era code notices.
  virtual void set_a20_enabled(bool) {}
  // Live migration: GuestMemory's dirty log was just taken; every guest store from here on
  // must mark its page again (the built-in CPU drops its write translations, which mark the
  // page when they are made; KVM's vCPUs need nothing: the accelerator's dirty log sees their
  // stores). False when this backend cannot log its writes. Call it while the vCPU is held at
  // a boundary.
  virtual bool restart_write_logging() { return false; }
  // This vCPU's code cache; call it on the vCPU's thread, between run() calls.
  virtual CodeCacheStats code_cache_stats() const { return {}; }
};

// The CPU model a guest sees (--cpu-model). kLamina: CpuidModel's leaves for the machine's
// CpuFeatures, the same on every backend (on KVM without what the host cannot run), so a VM
// moves between them without its CPUID changing. kHost: the host's instruction set through KVM
// (kvm_cpuid.h), faster for code that checks CPUID for newer extensions; KVM only.
enum class CpuModelKind : uint8_t { kLamina = 0, kHost = 1 };
std::string_view cpu_model_name(CpuModelKind kind);

// What vCPU 0 presents at reset, for comparing two machines (a migration's source and
// destination, a checkpoint and the machine restoring it).
struct PresentedCpu {
  CpuModelKind kind = CpuModelKind::kLamina;
  std::vector<cpu::x86::CpuidEntry> leaves;
};

class Accelerator {
 public:
  virtual ~Accelerator() = default;
  virtual std::string_view name() const = 0;
  virtual Result<std::unique_ptr<Vcpu>> create_vcpu(uint32_t index,
                                                    cpu::x86::CpuEnvironment& environment) = 0;
  // Guest RAM in [physical, physical + length) was written by something other than a vCPU
  // (device DMA, a loader): every vCPU drops translations of those pages at its next block
  // boundary. Thread-safe; devices must call it for every DMA write into guest RAM.
  virtual void guest_memory_written(uint64_t physical, uint64_t length) = 0;
  virtual const PresentedCpu& presented_cpu() const = 0;

  // Live migration, for backends whose vCPUs store to guest RAM unseen (KVM): start/stop
  // logging those stores, and collect_dirty_pages() marks the pages stored to since the last
  // call in GuestMemory's dirty log (call it with the vCPUs held, before the log is taken).
  // The built-in CPU marks the log itself, so these do nothing there.
  [[nodiscard]] virtual Result<void> start_dirty_logging() { return {}; }
  virtual void stop_dirty_logging() {}
  [[nodiscard]] virtual Result<void> collect_dirty_pages() { return {}; }
};

// How the built-in CPU runs code: `jit` translates blocks to host code within a cache of
// `code_cache_bytes` for the whole VM (split evenly among its vCPUs); else it interprets.
struct EmuOptions {
  bool jit = true;
  uint64_t code_cache_bytes = uint64_t{64} << 20;  // machine/vm_config.h's kDefaultCodeCacheBytes
};

// The built-in CPU; always available. `features` is the VM's CPU model (CPUID, MSRs; its
// vcpu_count sets the topology); an invalid model is kInvalidArgument.
Result<std::unique_ptr<Accelerator>> create_emu_accelerator(GuestMemory& memory,
                                                            const cpu::x86::CpuFeatures& features = {},
                                                            EmuOptions options = {});

// Hardware virtualization through /dev/kvm (kvm_*.h). With kLamina the guest sees CpuidModel's
// leaves for `features` less what this host's KVM cannot run (each dropped feature logged once
// per VM); with kHost the host's instruction set with Lamina's platform, taking vcpu_count, the
// hypervisor signature, bus_khz and x2apic from `features`. Either way TSC-deadline is not
// offered (the guest TSC is the host's, which the LAPIC's deadline timer does not follow), and
// the timing leaf reports the host's TSC rate (kvm_cpuid.h). kUnsupported with a
// message naming the cause when KVM is missing, not permitted or too old; kInvalidArgument for a
// vCPU count the host cannot run.
// `open_device` (borrowed; -1 opens kvm_device_path()) is the KVM device opened earlier with
// open_kvm_device(), for a caller whose sandbox forbids opening files (the worker).
Result<std::unique_ptr<Accelerator>> create_kvm_accelerator(
    GuestMemory& memory, const cpu::x86::CpuFeatures& features = {}, int open_device = -1,
    CpuModelKind model = CpuModelKind::kLamina, bool log_dropped_features = true);
// What this host's KVM runs (kvm_cpuid.h, kvm_support), for presenting Lamina's model reduced
// to it on the built-in CPU too, so the VM can move to KVM here. `open_device` as above.
Result<cpu::x86::CpuidSupport> kvm_cpuid_support(int open_device = -1);
// Opens the KVM device with create_kvm_accelerator's checks and errors, before a sandbox.
Result<UniqueFd> open_kvm_device();
// What probe_kvm found out about the host's KVM.
struct KvmHost {
  // KVM's PVM flavour (module kvm_pvm, no kvm_intel/kvm_amd): a software hypervisor for
  // PVM-enabled guest kernels. It runs an unmodified guest kernel through KVM's instruction
  // emulator, far slower than the built-in CPU, and stops at instructions that emulator lacks
  // (protected-mode IRET, CMPXCHG16B): only tiny guests run there.
  bool software_pvm = false;
};
// Whether create_kvm_accelerator can work here: the same checks, without making a VM.
Result<KvmHost> probe_kvm();

}  // namespace lamina::accel
