#pragma once
// The CPUID model of the built-in CPU: it advertises exactly what the core (and the x87/SSE
// unit) implement. Anything not listed here raises #UD when executed.
//
// Thread-safety: pure function.

#include <cstdint>

namespace lamina::cpu::x86 {

struct CpuidResult {
  uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidResult cpuid(uint32_t leaf, uint32_t subleaf);

}  // namespace lamina::cpu::x86
