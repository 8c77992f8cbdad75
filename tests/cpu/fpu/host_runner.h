#pragma once
// HostRunner: executes one instruction on the host CPU with a given x87/MMX/SSE state,
// general registers, RFLAGS and a memory operand at [rsi], and reads everything back. It is the
// oracle of the differential tests. The stub is built at run time in an executable page:
//   save host FPU state; FXRSTOR state; load GPRs and flags; <instruction>; store them; FXSAVE.
// An unmasked SSE exception (#XM, SIGFPE), #UD (SIGILL) or #GP (SIGSEGV) of the instruction
// is caught and execution resumes after it, with the state the CPU left.
//
// Thread-safety: one runner per thread (the SIGFPE handler uses thread-local resume data).

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu/x86/simd/simd_state.h"

namespace lamina::cpu::x86::test {

// General registers in encoding order (rax=0 .. r15=15). rsp, rsi and rdi are not loaded:
// rsi holds the memory operand's address and rdi the state's.
struct alignas(64) HostMachine {
  uint8_t fxsave[512] = {};
  std::array<uint64_t, 16> gpr{};
  uint64_t rflags = 0x2;
};

class HostRunner {
 public:
  HostRunner();
  ~HostRunner();
  HostRunner(const HostRunner&) = delete;
  HostRunner& operator=(const HostRunner&) = delete;

  // Runs `instruction` (its memory operand must be encoded as [rsi]). Returns true when the
  // instruction raised SIGFPE (an unmasked SSE exception, or #MF on a waiting instruction).
  bool run(const std::vector<uint8_t>& instruction, HostMachine& machine, uint8_t* memory);
  // The signal the last run() caught: 0, SIGFPE, SIGILL (#UD) or SIGSEGV (#GP).
  int last_signal() const { return last_signal_; }

 private:
  uint8_t* page_ = nullptr;
  int last_signal_ = 0;
};

// Conversions between SimdState and the FXSAVE image (64-bit layout), written independently of
// the unit's FXSAVE so the oracle does not share its code.
void state_to_fxsave(const SimdState& state, uint8_t* image);
void fxsave_to_state(const uint8_t* image, SimdState& state);

}  // namespace lamina::cpu::x86::test
