#pragma once
// Test helpers that encode descriptors from their fields, written from the SDM's figures and
// independent of the decoder under test.

#include <cstdint>

namespace lamina::cpu::x86::test_support {

// Builds a descriptor from fields, laid out per SDM Figure 3-8 (independently of the decoder).
inline uint64_t descriptor(uint32_t base, uint32_t limit, uint8_t type, bool s, uint8_t dpl, bool p,
                           bool l = false, bool db = false, bool g = false, bool avl = false) {
  uint64_t low = (limit & 0xffff) | (uint64_t{base & 0xffff} << 16);
  uint64_t high = ((base >> 16) & 0xff) | (uint64_t{type} << 8) | (uint64_t{s} << 12) |
                  (uint64_t{dpl} << 13) | (uint64_t{p} << 15) |
                  (uint64_t{(limit >> 16) & 0xf} << 16) | (uint64_t{avl} << 20) |
                  (uint64_t{l} << 21) | (uint64_t{db} << 22) | (uint64_t{g} << 23) |
                  (uint64_t{base >> 24} << 24);
  return low | (high << 32);
}

// A legacy gate: offset 15:0, selector, count/IST, type, DPL, P, offset 31:16.
inline uint64_t gate(uint32_t offset, uint16_t selector, uint8_t type, uint8_t dpl, bool p,
                     uint8_t count = 0) {
  return (offset & 0xffff) | (uint64_t{selector} << 16) | (uint64_t{count} << 32) |
         (uint64_t{type} << 40) | (uint64_t{dpl} << 45) | (uint64_t{p} << 47) |
         (uint64_t{offset >> 16} << 48);
}

}  // namespace lamina::cpu::x86::test_support
