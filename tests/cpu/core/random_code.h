#pragma once
// Runs arbitrary bytes as code on the built-in CPU in system mode (real, 32-bit protected or
// 64-bit mode, descriptor tables and IDT themselves partly random) for a bounded budget. Used
// by the robustness test (GCC) and the libFuzzer target (clang, LAMINA_FUZZ).

#include <cstdint>
#include <span>

#include "cpu/x86/cpu.h"

namespace lamina::cpu::x86::testing {

// Returns how run() ended; never crashes or hangs for any input.
CpuExit::Kind run_random_code(std::span<const uint8_t> input, uint64_t budget);

}  // namespace lamina::cpu::x86::testing
