#pragma once
// Random x86-64 user-mode instruction sequences for the differential tests, per instruction
// class, with the flags each sequence leaves architecturally defined. Registers RSP and R15
// are never operands (R15 holds the data buffer base, RSP the stack); memory operands are
// [R15 + disp8]. Flag readers are only emitted when the flags they read are defined.

#include <cstdint>
#include <random>
#include <vector>

namespace lamina::cpu::x86::testing {

enum class InstructionClass { kAlu, kShift, kMultiplyDivide, kBit, kMove, kString, kStack, kSystem };

struct GeneratedSequence {
  std::vector<uint8_t> code;
  uint64_t defined_flags = 0;  // arithmetic flags whose final value is defined
};

// What the generated code may contain beyond the defaults.
struct GeneratorOptions {
  // INT n with a random vector (the system class); off where the host that checks the
  // results does not deliver it architecturally (Differential's host probes).
  bool int_n = true;
  // RFLAGS.NT set by POPF (the system class); off where the host loses it.
  bool nt = true;
};

// `data_base` and `data_size`: the buffer R15 points into (R15 = data_base + data_size / 4).
GeneratedSequence generate_sequence(std::mt19937_64& random, InstructionClass kind, int length,
                                    uint64_t data_base, uint64_t data_size, GeneratorOptions options = {});

}  // namespace lamina::cpu::x86::testing
