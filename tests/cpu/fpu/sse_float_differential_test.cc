// Differential tests of the SSE/SSE2/SSE3 floating-point arithmetic, compares and conversions
// against the host CPU, with random MXCSR rounding, DAZ, FTZ and exception masks (unmasked
// exceptions raise SIGFPE on the host and must be #XM from the unit).

#include <gtest/gtest.h>

#include "sse_case.h"

namespace lamina::cpu::x86::test {
namespace {

void append(std::vector<FormSpec>& to, const std::vector<FormSpec>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

TEST(SseFloatDifferential, Arithmetic) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x51, 0x58, 0x59, 0x5c, 0x5d, 0x5e, 0x5f}) {
    for (uint8_t prefix : {0, 0x66, 0xf2, 0xf3}) {
      append(forms, both_forms(OpcodeMap::kTwoByte, opcode, prefix, Operand::kXmm, Operand::kXmm));
    }
  }
  run_sse_forms(forms, 20, 150);
}

TEST(SseFloatDifferential, ReciprocalEstimates) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x52, 0x53}) {
    for (uint8_t prefix : {0, 0xf3}) {
      append(forms, both_forms(OpcodeMap::kTwoByte, opcode, prefix, Operand::kXmm, Operand::kXmm));
    }
  }
  run_sse_forms(forms, 21, 150);
}

TEST(SseFloatDifferential, Compares) {
  std::vector<FormSpec> forms;
  for (uint8_t prefix : {0, 0x66, 0xf2, 0xf3}) {
    append(forms, both_forms(OpcodeMap::kTwoByte, 0xc2, prefix, Operand::kXmm, Operand::kXmm, true));
  }
  for (uint8_t opcode : {0x2e, 0x2f}) {
    for (uint8_t prefix : {0, 0x66}) {
      append(forms, both_forms(OpcodeMap::kTwoByte, opcode, prefix, Operand::kXmm, Operand::kXmm));
    }
  }
  run_sse_forms(forms, 22, 300);
}

TEST(SseFloatDifferential, HorizontalAndAlternating) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x7c, 0x7d, 0xd0}) {
    for (uint8_t prefix : {0x66, 0xf2}) {
      append(forms, both_forms(OpcodeMap::kTwoByte, opcode, prefix, Operand::kXmm, Operand::kXmm));
    }
  }
  run_sse_forms(forms, 23, 200);
}

}  // namespace
}  // namespace lamina::cpu::x86::test
