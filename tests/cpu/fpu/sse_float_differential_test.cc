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
    append(forms,
           both_forms(OpcodeMap::kTwoByte, 0xc2, prefix, Operand::kXmm, Operand::kXmm, true));
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

FormSpec one(uint8_t opcode, uint8_t prefix, bool memory, Operand reg, Operand rm,
             bool rex_w = false) {
  FormSpec spec;
  spec.form.opcode = opcode;
  spec.form.prefix = prefix;
  spec.form.memory = memory;
  spec.form.rex_w = rex_w;
  spec.reg = reg;
  spec.rm = rm;
  return spec;
}

TEST(SseFloatDifferential, ConversionsBetweenVectorFormats) {
  std::vector<FormSpec> forms;
  for (uint8_t prefix : {0, 0x66, 0xf2, 0xf3}) {
    append(forms, both_forms(OpcodeMap::kTwoByte, 0x5a, prefix, Operand::kXmm, Operand::kXmm));
  }
  for (uint8_t prefix : {0, 0x66, 0xf3}) {
    append(forms, both_forms(OpcodeMap::kTwoByte, 0x5b, prefix, Operand::kXmm, Operand::kXmm));
  }
  for (uint8_t prefix : {0x66, 0xf2, 0xf3}) {
    append(forms, both_forms(OpcodeMap::kTwoByte, 0xe6, prefix, Operand::kXmm, Operand::kXmm));
  }
  run_sse_forms(forms, 24, 300);
}

TEST(SseFloatDifferential, ConversionsWithIntegerAndMmxRegisters) {
  std::vector<FormSpec> forms;
  for (bool memory : {false, true}) {
    for (bool rex_w : {false, true}) {
      for (uint8_t prefix : {0xf2, 0xf3}) {
        forms.push_back(one(0x2a, prefix, memory, Operand::kXmm, Operand::kGpr, rex_w));
        forms.push_back(one(0x2c, prefix, memory, Operand::kGpr, Operand::kXmm, rex_w));
        forms.push_back(one(0x2d, prefix, memory, Operand::kGpr, Operand::kXmm, rex_w));
      }
    }
    for (uint8_t prefix : {0, 0x66}) {
      forms.push_back(one(0x2a, prefix, memory, Operand::kXmm, Operand::kMmx));
      forms.push_back(one(0x2c, prefix, memory, Operand::kMmx, Operand::kXmm));
      forms.push_back(one(0x2d, prefix, memory, Operand::kMmx, Operand::kXmm));
    }
  }
  run_sse_forms(forms, 25, 300);
}

}  // namespace
}  // namespace lamina::cpu::x86::test
