#pragma once
// Runs generated x86-64 code on the host CPU itself between a prologue that loads all general
// registers and RFLAGS from a context and an epilogue that stores them back. Faulting code
// (SIGFPE, SIGSEGV, SIGILL) is caught with a signal handler on an alternate stack and reported
// with the registers at the fault. Linux/x86-64 only, like the emulator's tests.

#include <cstdint>
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
};

class HostExecutor {
 public:
  // `code_page` must be a RWX page of at least 4 KiB; code goes at its start.
  explicit HostExecutor(uint8_t* code_page);
  ~HostExecutor();
  HostExecutor(const HostExecutor&) = delete;
  HostExecutor& operator=(const HostExecutor&) = delete;

  HostOutcome run(std::span<const uint8_t> code, const RegisterFile& initial);
  // Where the test code starts (the prologue precedes it).
  uint64_t code_address() const;

 private:
  uint8_t* page_;
  std::vector<uint8_t> alternate_stack_;
};

}  // namespace lamina::cpu::x86::testing
