#pragma once
// Architectural exception vectors (SDM vol. 3A, table 6-1).

#include <cstdint>

namespace lamina::cpu::x86::vector {
inline constexpr uint8_t kDivideError = 0, kDebug = 1, kNmi = 2, kBreakpoint = 3, kOverflow = 4,
                         kBoundRange = 5, kInvalidOpcode = 6, kDeviceNotAvailable = 7,
                         kDoubleFault = 8, kInvalidTss = 10, kSegmentNotPresent = 11,
                         kStackFault = 12, kGeneralProtection = 13, kPageFault = 14,
                         kFloatingPoint = 16, kAlignmentCheck = 17, kMachineCheck = 18,
                         kSimdFloatingPoint = 19;
}  // namespace lamina::cpu::x86::vector
