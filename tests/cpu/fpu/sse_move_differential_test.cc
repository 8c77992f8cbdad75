// Differential tests of the SSE/SSE2 moves, shuffles, logic, MOVD/MOVQ and FXSAVE against the
// host CPU.

#include <gtest/gtest.h>

#include "sse_case.h"

namespace lamina::cpu::x86::test {
namespace {

void append(std::vector<FormSpec>& to, const std::vector<FormSpec>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

FormSpec one(uint8_t opcode, uint8_t prefix, bool memory, Operand reg, Operand rm,
             bool immediate = false, bool rex_w = false) {
  FormSpec spec;
  spec.form.opcode = opcode;
  spec.form.prefix = prefix;
  spec.form.memory = memory;
  spec.form.rex_w = rex_w;
  spec.reg = reg;
  spec.rm = rm;
  spec.random_immediate = immediate;
  return spec;
}

TEST(SseMoveDifferential, VectorMovesAndLogic) {
  std::vector<FormSpec> forms;
  for (uint8_t prefix : {0, 0x66, 0xf2, 0xf3}) {
    append(forms, both_forms(OpcodeMap::kTwoByte, 0x10, prefix, Operand::kXmm, Operand::kXmm));
    append(forms, both_forms(OpcodeMap::kTwoByte, 0x11, prefix, Operand::kXmm, Operand::kXmm));
  }
  for (uint8_t prefix : {0, 0x66}) {
    for (uint8_t opcode : {0x28, 0x29, 0x14, 0x15, 0x54, 0x55, 0x56, 0x57}) {
      append(forms, both_forms(OpcodeMap::kTwoByte, opcode, prefix, Operand::kXmm, Operand::kXmm));
    }
    append(forms,
           both_forms(OpcodeMap::kTwoByte, 0xc6, prefix, Operand::kXmm, Operand::kXmm, true));
    forms.push_back(one(0x13, prefix, true, Operand::kXmm, Operand::kXmm));
    forms.push_back(one(0x17, prefix, true, Operand::kXmm, Operand::kXmm));
    forms.push_back(one(0x12, prefix, true, Operand::kXmm, Operand::kXmm));
    forms.push_back(one(0x16, prefix, true, Operand::kXmm, Operand::kXmm));
    forms.push_back(one(0x2b, prefix, true, Operand::kXmm, Operand::kXmm));
    forms.push_back(one(0x50, prefix, false, Operand::kGpr, Operand::kXmm));
  }
  forms.push_back(one(0x12, 0, false, Operand::kXmm, Operand::kXmm));  // MOVHLPS
  forms.push_back(one(0x16, 0, false, Operand::kXmm, Operand::kXmm));  // MOVLHPS
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x12, 0xf3, Operand::kXmm, Operand::kXmm));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x16, 0xf3, Operand::kXmm, Operand::kXmm));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x12, 0xf2, Operand::kXmm, Operand::kXmm));
  for (uint8_t prefix : {0x66, 0xf3}) {
    append(forms, both_forms(OpcodeMap::kTwoByte, 0x6f, prefix, Operand::kXmm, Operand::kXmm));
    append(forms, both_forms(OpcodeMap::kTwoByte, 0x7f, prefix, Operand::kXmm, Operand::kXmm));
  }
  forms.push_back(one(0xe7, 0x66, true, Operand::kXmm, Operand::kXmm));
  forms.push_back(one(0xf0, 0xf2, true, Operand::kXmm, Operand::kXmm));
  run_sse_forms(forms, 10, 40);
}

TEST(SseMoveDifferential, MmxAndGeneralRegisterMoves) {
  std::vector<FormSpec> forms;
  for (bool rex_w : {false, true}) {
    for (bool memory : {false, true}) {
      forms.push_back(one(0x6e, 0, memory, Operand::kMmx, Operand::kGpr, false, rex_w));
      forms.push_back(one(0x6e, 0x66, memory, Operand::kXmm, Operand::kGpr, false, rex_w));
      forms.push_back(one(0x7e, 0, memory, Operand::kMmx, Operand::kGpr, false, rex_w));
      forms.push_back(one(0x7e, 0x66, memory, Operand::kXmm, Operand::kGpr, false, rex_w));
    }
  }
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x7e, 0xf3, Operand::kXmm, Operand::kXmm));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0xd6, 0x66, Operand::kXmm, Operand::kXmm));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x6f, 0, Operand::kMmx, Operand::kMmx));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x7f, 0, Operand::kMmx, Operand::kMmx));
  forms.push_back(one(0xe7, 0, true, Operand::kMmx, Operand::kMmx));
  forms.push_back(one(0xd6, 0xf3, false, Operand::kXmm, Operand::kMmx));
  forms.push_back(one(0xd6, 0xf2, false, Operand::kMmx, Operand::kXmm));
  run_sse_forms(forms, 11, 60);
}

TEST(SseMoveDifferential, StoreMxcsr) {
  FormSpec spec = one(0xae, 0, true, Operand::kFixed, Operand::kXmm);
  spec.form.reg = 3;
  run_sse_forms({spec}, 12, 100);
}

// FXSAVE64/FXSAVE (REX.W or not) compared byte for byte except MXCSR_MASK (the host reports its
// own extensions); bytes 416-511 are left alone by both.
TEST(SseMoveDifferential, FxsaveImage) {
  std::vector<FormSpec> forms;
  for (bool rex_w : {false, true}) {
    FormSpec spec = one(0xae, 0, true, Operand::kFixed, Operand::kXmm, false, rex_w);
    spec.form.reg = 0;
    forms.push_back(spec);
  }
  SseCaseOptions options;
  options.compared_memory = 512;
  options.ignored_memory = {{28, 32}};
  run_sse_forms(forms, 13, 200, options);
}

// FXRSTOR from random images with a valid MXCSR.
TEST(SseMoveDifferential, FxrstorImage) {
  std::vector<FormSpec> forms;
  for (bool rex_w : {false, true}) {
    FormSpec spec = one(0xae, 0, true, Operand::kFixed, Operand::kXmm, false, rex_w);
    spec.form.reg = 1;
    forms.push_back(spec);
  }
  SseCaseOptions options;
  options.prepare_memory = [](ValueSource& values, uint8_t* memory) {
    uint32_t mxcsr = static_cast<uint32_t>(values.bits(16));
    std::memcpy(memory + 24, &mxcsr, 4);
  };
  run_sse_forms(forms, 14, 200, options);
}

// LDMXCSR with valid values.
TEST(SseMoveDifferential, LoadMxcsr) {
  FormSpec spec = one(0xae, 0, true, Operand::kFixed, Operand::kXmm);
  spec.form.reg = 2;
  SseCaseOptions options;
  options.prepare_memory = [](ValueSource& values, uint8_t* memory) {
    uint32_t mxcsr = static_cast<uint32_t>(values.bits(16));
    std::memcpy(memory, &mxcsr, 4);
  };
  run_sse_forms({spec}, 15, 300, options);
}

}  // namespace
}  // namespace lamina::cpu::x86::test
