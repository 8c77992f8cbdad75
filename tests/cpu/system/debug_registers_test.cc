// system/debug_registers: the DR6/DR7 write rules, the MOV DR checks in priority order, and
// breakpoint decoding and matching (Intel SDM vol. 3B, 17.2).
#include "cpu/x86/system/debug_registers.h"

#include <gtest/gtest.h>

namespace lamina::cpu::x86 {
namespace {

std::array<uint64_t, 8> registers(uint64_t dr0, uint64_t dr1, uint64_t dr2, uint64_t dr3,
                                  uint64_t dr7) {
  return {dr0, dr1, dr2, dr3, 0, 0, dr6::kInitial, dr7};
}

// DR7 with breakpoint `index` enabled (Ln) for R/W `access` and LEN `length` encodings.
uint64_t enable(unsigned index, unsigned access, unsigned length) {
  return (uint64_t{1} << (2 * index)) | (uint64_t{(length << 2) | access} << (16 + 4 * index));
}

TEST(DebugRegisters, WritesKeepTheWritableBitsAndReadTheFixedOnes) {
  EXPECT_EQ(debug_register_value(6, 0), 0xffff0ff0u);
  EXPECT_EQ(debug_register_value(6, 0xffffffff), 0xffffefffu);
  EXPECT_EQ(debug_register_value(7, 0), 0x400u);
  EXPECT_EQ(debug_register_value(7, 0xffffffff), 0xffff27ffu);
  EXPECT_EQ(debug_register_value(0, 0xffff800000000000), 0xffff800000000000u);
  EXPECT_EQ(debug_register_value(7, uint64_t{1} << 32),
            std::unexpected(general_protection_fault()));
  EXPECT_EQ(debug_register_value(6, uint64_t{1} << 63),
            std::unexpected(general_protection_fault()));
}

TEST(DebugRegisters, AccessChecksInPriorityOrder) {
  const Fault undefined{exception_vector::kInvalidOpcode, 0}, debug{exception_vector::kDebug, 0};
  EXPECT_EQ(check_debug_register_access(4, 3, true, dr7::kGd),
            std::unexpected(general_protection_fault()));
  EXPECT_EQ(check_debug_register_access(5, 0, true, dr7::kGd), std::unexpected(undefined));
  EXPECT_EQ(check_debug_register_access(0, 0, false, dr7::kGd | dr7::kFixed1),
            std::unexpected(debug));
  EXPECT_EQ(check_debug_register_access(8, 0, false, dr7::kFixed1), std::unexpected(undefined));
  EXPECT_EQ(check_debug_register_access(15, 0, false, dr7::kGd), std::unexpected(undefined));
  EXPECT_EQ(check_debug_register_access(4, 0, false, dr7::kFixed1), 6);
  EXPECT_EQ(check_debug_register_access(5, 0, false, dr7::kFixed1), 7);
  EXPECT_EQ(check_debug_register_access(3, 0, true, dr7::kFixed1), 3);
}

TEST(DebugRegisters, DecodesEnabledBreakpointsOnly) {
  // Global enables count too; a disabled breakpoint's fields are ignored.
  const uint64_t control = enable(0, 0, 0) | (uint64_t{2} << 2) /* G1 */ |
                           (uint64_t{0b1101} << 20) |
                           (uint64_t{0b1111} << 24) /* DR2 fields, not enabled */;
  const BreakpointSet set =
      decode_breakpoints(registers(0x1000, 0x2003, 0x3000, 0, control), false);
  EXPECT_EQ(set.instruction_mask, 1);
  EXPECT_EQ(set.data_mask, 2);
  EXPECT_EQ(set.io_mask, 0);
  EXPECT_EQ(set.entries[1].address, 0x2000u) << "aligned down to the 4-byte length";
  EXPECT_EQ(set.entries[1].length, 4);
  EXPECT_FALSE(decode_breakpoints(registers(0, 0, 0, 0, dr7::kFixed1 | dr7::kGd), false).any());
}

TEST(DebugRegisters, MatchesInstructionDataAndIoAccesses) {
  const uint64_t control = enable(0, 0, 0) | enable(1, 1, 1) | enable(2, 3, 2) | enable(3, 2, 3);
  const auto dr = registers(0x401000, 0x5001, 0x6008, 0x3f8, control);
  const BreakpointSet set = decode_breakpoints(dr, true);
  EXPECT_EQ(match_instruction(set, 0x401000), 1);
  EXPECT_EQ(match_instruction(set, 0x401001), 0);
  // DR1: write, 2 bytes at 0x5000-0x5001; DR2: read/write, 8 bytes at 0x6008-0x600f.
  EXPECT_EQ(match_data(set, 0x5001, 1, true), 2);
  EXPECT_EQ(match_data(set, 0x5001, 1, false), 0) << "a read misses a write breakpoint";
  EXPECT_EQ(match_data(set, 0x4ffc, 4, true), 0);
  EXPECT_EQ(match_data(set, 0x4ffd, 4, true), 2) << "any byte of the access counts";
  EXPECT_EQ(match_data(set, 0x6000, 16, false), 4);
  EXPECT_EQ(match_data(set, 0x6010, 8, true), 0);
  EXPECT_EQ(match_data(set, 0x401000, 1, false), 0) << "instruction breakpoints match no data";
  EXPECT_TRUE(data_breakpoint_in_page(set, 0x5000));
  EXPECT_TRUE(data_breakpoint_in_page(set, 0x6000));
  EXPECT_FALSE(data_breakpoint_in_page(set, 0x401000));
  // DR3: I/O, 4 bytes at 0x3f8-0x3fb.
  EXPECT_EQ(match_io(set, 0x3fb, 1), 8);
  EXPECT_EQ(match_io(set, 0x3fc, 2), 0);
  EXPECT_EQ(match_io(decode_breakpoints(dr, false), 0x3f8, 1), 0) << "R/W 10 needs CR4.DE";
}

}  // namespace
}  // namespace lamina::cpu::x86
