#pragma once
// Cpu: one built-in x86-64 logical processor. run() executes guest code until the budget is
// spent or something needs the caller (HLT, a kick, a triple fault); port I/O, MMIO, interrupts
// and time go through the CpuEnvironment given at construction.
//
// Ownership: owns its core state, TLB and block cache; borrows guest memory and the
// environment, which must outlive it. Thread-safety: run(), state() and invalidate_code() on
// the vCPU's own thread only (or while it is not running); post() from any thread.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "base/guest_memory.h"
#include "cpu/x86/cpu_environment.h"
#include "cpu/x86/cpu_state.h"
#include "cpu/x86/exception_vectors.h"
#include "cpu/x86/shared_code_pages.h"
#include "cpu/x86/system/cpuid_model.h"
#include "cpu/x86/system/msr_file.h"

namespace lamina::cpu::x86 {

struct CpuCore;
struct Block;
namespace jit {
class JitEngine;
}

struct CpuExit {
  enum class Kind : uint8_t {
    kBudgetExhausted,  // instruction budget used up (run again)
    kHalted,           // HLT with no interrupt to take: wait, post(kInterrupt), run again
    kKicked,           // post(request::kKick) from another thread
    kTripleFault,      // the VM must be reset or stopped; `reason` says why
    kWaitForStartup,   // an application processor after INIT, waiting for a SIPI
  };
  Kind kind = Kind::kBudgetExhausted;
  std::string reason;
  uint64_t instructions = 0;  // retired during this call
};

// How run() executes blocks: kInterpreter calls each instruction's handler from a loop;
// kJit runs host code translated from the block (jit/), the interpreter staying the path for
// single-step, breakpoints and whatever the translator does not cover.
enum class CpuEngine : uint8_t { kInterpreter, kJit };

struct CpuConfiguration {
  // The VM's CPU model (CPUID, and which MSRs exist), shared by its vCPUs; must outlive the
  // Cpu. Null means the default CpuFeatures model.
  const CpuidModel* model = nullptr;
  uint32_t vcpu_index = 0;  // initial APIC ID; vCPU 0 is the bootstrap processor
  // MSR file hooks (TSC deadline for the LAPIC). Without a clock the environment's read_tsc()
  // is the time base.
  MsrHooks msr_hooks;
  // The VM's shared code-page tracking (needed with more than one vCPU); must outlive the Cpu.
  SharedCodePages* shared_code = nullptr;
  CpuEngine engine = CpuEngine::kInterpreter;
  // The bound on this vCPU's translated code (kJit); the cache is flushed when it fills.
  uint64_t code_cache_bytes = uint64_t{16} << 20;
  // A block is translated on this run of it (kJit); until then it is interpreted. A translation
  // costs ~13 us, about as much as interpreting the block 30-50 times, so code that runs a few
  // times (boot, churned code, MMIO) is left to the interpreter and the cache to hot code. 16
  // against 2 (interleaved, same host): boot 2.6-2.8 -> 2.35-2.45 s; 4 vCPUs (16 MiB of cache
  // each) boot + mixed bench 10.2-10.4 -> 8.5-9.9 CPU s, 12-15 -> 2 flushes, 206-236K -> 68K
  // translations; 1 vCPU: 50K -> 30K translations, the mixed bench the same (2.52-2.78 against
  // 2.54-2.67 s). Tests use 1 to translate everything.
  uint32_t translate_on_run = 16;
};

class Cpu {
 public:
  Cpu(GuestMemory& memory, CpuEnvironment& environment, CpuConfiguration configuration = {});
  ~Cpu();
  Cpu(const Cpu&) = delete;
  Cpu& operator=(const Cpu&) = delete;

  CpuExit run(uint64_t instruction_budget);

  // Architectural state, every MSR included (CpuState::msr). After changing it from outside
  // run() (a loader setting up long mode, a migration restore), call state_changed().
  CpuState& state();
  const CpuState& state() const;
  void state_changed();
  // Power-on/RESET state: real mode, CS:IP = F000:FFF0 with CS base FFFF0000 (SDM 9.1.4).
  void reset();

  // Thread-safe requests (request::kKick, kInterrupt, kNmi, kInit). The interrupt controller
  // posts kInterrupt whenever an interrupt may have become pending for this vCPU. Translated
  // code sees it at its next block boundary (CpuCore::post_requests).
  void post(uint32_t requests);
  // Drops INIT and SIPI requests not yet taken (a restored state replaces what vCPU creation
  // queued, such as an application processor's initial INIT).
  void discard_startup_requests() {
    requests_.fetch_and(~(request::kInit | request::kStartup), std::memory_order_acq_rel);
  }
  void post_startup(uint8_t vector) {
    startup_vector_.store(vector, std::memory_order_relaxed);
    post(request::kStartup);
  }

  // The chipset's A20 gate (port 0x92, the i8042 output port), from any thread: while it is
  // off, physical address bit 20 reads as 0 (the 8086 wraparound that real-mode firmware and
  // old boot loaders probe). It takes effect at the next block boundary; after RESET it is on.
  void set_a20_enabled(bool enabled) {
    a20_enabled_.store(enabled, std::memory_order_relaxed);
    post(request::kA20);
  }

  // Guest-physical bytes changed behind the CPU's back (device DMA, a loader): drop the
  // translated code of those pages.
  void invalidate_code(uint64_t physical, uint64_t length);

  uint64_t instructions_retired() const;
  size_t cached_blocks() const;
  // The engine in use (kInterpreter when kJit was asked for but its code cache could not be
  // made), and the JIT's state for tests and statistics (null when interpreting).
  CpuEngine engine() const;
  const jit::JitEngine* jit() const;

 private:
  bool take_requests(CpuExit& exit);
  // Delivers the events a restored state carries (CpuState::pending_events, left by KVM);
  // false when run() must return `exit` (a triple fault).
  bool deliver_pending_events(CpuExit& exit);
  // `fault_frame`: the pushed RFLAGS image gets RF set (fault-class exceptions, SDM 17.3.1.1).
  bool deliver_event(uint8_t vector, bool has_error_code, uint32_t error_code, bool external,
                     bool fault_frame, CpuExit& exit);

  // The run loop's checked path (debug.cc), taken by a block while EFLAGS.TF or RF, an
  // interrupt shadow or an enabled DR7 breakpoint needs it.
  struct CheckedStep {
    size_t count = 0;          // instructions of the block that may run; 0: an event came first
    bool single_step = false;  // EFLAGS.TF when the instruction began
    bool held = false;         // after MOV SS/POP SS: this instruction's #DB traps merge in
  };
  // Clears RF, raises a due instruction breakpoint (#DB fault) and sets how many of the
  // block's instructions may run. False when run() must return `exit`.
  bool begin_checked_step(const Block& block, bool shadow, CpuExit& exit);
  // Raises the #DB trap (single step, data and I/O breakpoints) after the instructions ran.
  bool finish_checked_step(CpuExit& exit);
  // The B0-B3 bits of the instruction breakpoints due at RIP (none while RF masks them or
  // after MOV SS/POP SS), and the #DB fault that reports them.
  uint8_t due_instruction_breakpoints() const;
  bool raise_instruction_breakpoint(uint8_t hits, CpuExit& exit);

  std::optional<CpuidModel> default_model_;
  std::unique_ptr<CpuCore> core_;
  // Declared after the core it borrows.
  std::unique_ptr<jit::JitEngine> jit_;
  std::atomic<uint32_t> requests_{0};
  std::atomic<uint8_t> startup_vector_{0};
  std::atomic<bool> a20_enabled_{true};
  CheckedStep checked_step_;  // of the block being run on the checked path
};

}  // namespace lamina::cpu::x86
