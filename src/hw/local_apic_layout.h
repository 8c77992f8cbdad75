#pragma once
// Register layout of the local APIC shared by its two source files (Intel SDM vol. 3A, table
// 11-1 for the xAPIC page and table 11-6 for the x2APIC MSRs). Internal to hw/local_apic*.

#include <array>
#include <cstdint>

namespace lamina::hw::lapic_layout {

// Register indexes (MMIO offset >> 4, or x2APIC MSR - 0x800); SDM table 11-1 and 11-6.
constexpr unsigned kId = 0x02, kVersion = 0x03, kTpr = 0x08, kApr = 0x09, kPpr = 0x0a, kEoi = 0x0b,
                   kLdr = 0x0d, kDfr = 0x0e, kSvr = 0x0f, kIsr = 0x10, kTmr = 0x18, kIrr = 0x20,
                   kEsr = 0x28, kIcrLow = 0x30, kIcrHigh = 0x31, kLvtBase = 0x32,
                   kInitialCount = 0x38, kCurrentCount = 0x39, kDivide = 0x3e, kSelfIpi = 0x3f;

// Version 0x14 (integrated APIC), six LVT entries (max LVT index 5).
constexpr uint32_t kVersionValue = 0x00050014;
constexpr uint32_t kLvtMasked = 0x10000;
// Writable bits per LVT entry: timer (vector, mask, mode), thermal, performance, LINT0, LINT1
// (vector, delivery mode, polarity, trigger, mask), error (vector, mask).
constexpr uint32_t kLvtWritable[6] = {0x700ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff};
constexpr uint32_t kEsrSendIllegalVector = 0x20;
constexpr uint32_t kEsrReceiveIllegalVector = 0x40;
constexpr unsigned kTimerOneShot = 0, kTimerPeriodic = 1, kTimerTscDeadline = 2;
constexpr uint32_t kStateVersion = 1;

inline bool test_bit(const std::array<uint32_t, 8>& bits, unsigned vector) {
  return (bits[vector / 32] >> (vector % 32)) & 1;
}
inline void set_bit(std::array<uint32_t, 8>& bits, unsigned vector, bool value) {
  const uint32_t mask = 1u << (vector % 32);
  bits[vector / 32] = value ? bits[vector / 32] | mask : bits[vector / 32] & ~mask;
}
inline int highest_bit(const std::array<uint32_t, 8>& bits) {
  for (int word = 7; word >= 0; --word) {
    if (bits[word] != 0) return word * 32 + 31 - __builtin_clz(bits[word]);
  }
  return -1;
}

}  // namespace lamina::hw::lapic_layout
