#pragma once
// Runs generated x86-64 code on the host CPU itself between a prologue that loads all general
// registers and RFLAGS from a context and an epilogue that stores them back. Faulting code
// (SIGFPE, SIGSEGV, SIGILL) is caught with a signal handler on an alternate stack and reported
// with the registers at the fault. Linux/x86-64 only, like the emulator's tests.

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace lamina::cpu::x86::testing {

struct RegisterFile {
  uint64_t gpr[16] = {};
  uint64_t rflags = 0x202;
  uint64_t rip = 0;
};

struct HostOutcome {
  RegisterFile registers;
  int signal = 0;  // 0 when the code ran to its end
  // From the signal frame's sigcontext when signal != 0: the exception vector the kernel saw,
  // its error code and, for #PF, the faulting address (CR2).
  uint64_t trap_number = 0;
  uint64_t error_code = 0;
  uint64_t fault_address = 0;
};

// The host thread's segment selectors (64-bit Linux user mode).
struct HostSelectors {
  uint16_t cs = 0, ss = 0, ds = 0, es = 0, fs = 0, gs = 0;
};
HostSelectors read_host_selectors();

// What LAR and LSL tell user mode about a GDT/LDT entry: nothing (nullopt) for entries CPL 3
// cannot see (DPL 0, null, system), else the access-rights dword and the scaled limit.
struct HostDescriptor {
  uint32_t access_rights = 0;
  uint32_t limit = 0;
};
std::optional<HostDescriptor> probe_host_descriptor(uint16_t selector);

class HostExecutor {
 public:
  // `code_page` must be a RWX page of at least 4 KiB; code goes at its start.
  explicit HostExecutor(uint8_t* code_page);
  ~HostExecutor();
  HostExecutor(const HostExecutor&) = delete;
  HostExecutor& operator=(const HostExecutor&) = delete;

  // Runs `code`; afterwards DS, ES and GS are loaded again with the selectors they had when
  // the executor was made (the code may load them) and RFLAGS.AC is clear again.
  HostOutcome run(std::span<const uint8_t> code, const RegisterFile& initial);
  // Where the test code starts (the prologue precedes it).
  uint64_t code_address() const;

 private:
  uint8_t* page_;
  std::vector<uint8_t> alternate_stack_;
  HostSelectors selectors_;
};

}  // namespace lamina::cpu::x86::testing
