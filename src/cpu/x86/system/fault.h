#pragma once
// An x86 exception raised by a system component: its vector and error code. The core delivers
// it (or escalates it to #DF / triple fault). Intel SDM Vol. 3A 6.3, Table 6-1.

#include <cstdint>

namespace lamina::cpu::x86 {

namespace exception_vector {
inline constexpr uint8_t kDebug = 1;               // #DB
inline constexpr uint8_t kInvalidOpcode = 6;       // #UD
inline constexpr uint8_t kInvalidTss = 10;         // #TS
inline constexpr uint8_t kSegmentNotPresent = 11;  // #NP
inline constexpr uint8_t kStackFault = 12;         // #SS
inline constexpr uint8_t kGeneralProtection = 13;  // #GP
inline constexpr uint8_t kPageFault = 14;          // #PF
}  // namespace exception_vector

// For selector faults the error code is the selector with RPL cleared, EXT in bit 0 and IDT in
// bit 1 (SDM 6.13).
struct Fault {
  uint8_t vector = 0;
  uint32_t error_code = 0;
  friend bool operator==(const Fault&, const Fault&) = default;
};

inline constexpr Fault general_protection_fault(uint32_t error_code = 0) {
  return Fault{exception_vector::kGeneralProtection, error_code};
}

}  // namespace lamina::cpu::x86
