// Differential tests of the MMX and SSE2 packed-integer instructions against the host CPU.

#include <gtest/gtest.h>

#include "sse_case.h"

namespace lamina::cpu::x86::test {
namespace {

constexpr uint8_t kBinaryOpcodes[] = {
    0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x74, 0x75,
    0x76, 0xd1, 0xd2, 0xd3, 0xd4, 0xd5, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
    0xe0, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe8, 0xe9, 0xea, 0xeb, 0xec, 0xed, 0xee, 0xef,
    0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe};

void append(std::vector<FormSpec>& to, const std::vector<FormSpec>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

TEST(SseIntegerDifferential, MmxBinaryOperations) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : kBinaryOpcodes) {
    append(forms, both_forms(OpcodeMap::kTwoByte, opcode, 0, Operand::kMmx, Operand::kMmx));
  }
  run_sse_forms(forms, 1, 60);
}

TEST(SseIntegerDifferential, XmmBinaryOperations) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : kBinaryOpcodes) {
    append(forms, both_forms(OpcodeMap::kTwoByte, opcode, 0x66, Operand::kXmm, Operand::kXmm));
  }
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x6c, 0x66, Operand::kXmm, Operand::kXmm));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x6d, 0x66, Operand::kXmm, Operand::kXmm));
  run_sse_forms(forms, 2, 60);
}

TEST(SseIntegerDifferential, ShufflesInsertExtractAndMasks) {
  std::vector<FormSpec> forms;
  append(forms, both_forms(OpcodeMap::kTwoByte, 0x70, 0, Operand::kMmx, Operand::kMmx, true));
  for (uint8_t prefix : {0x66, 0xf2, 0xf3}) {
    append(forms,
           both_forms(OpcodeMap::kTwoByte, 0x70, prefix, Operand::kXmm, Operand::kXmm, true));
  }
  append(forms, both_forms(OpcodeMap::kTwoByte, 0xc4, 0, Operand::kMmx, Operand::kGpr, true));
  append(forms, both_forms(OpcodeMap::kTwoByte, 0xc4, 0x66, Operand::kXmm, Operand::kGpr, true));
  for (auto [prefix, source] : {std::pair{0, Operand::kMmx}, std::pair{0x66, Operand::kXmm}}) {
    for (uint8_t opcode : {0xc5, 0xd7}) {
      FormSpec spec;
      spec.form.opcode = opcode;
      spec.form.prefix = static_cast<uint8_t>(prefix);
      spec.reg = Operand::kGpr;
      spec.rm = source;
      spec.random_immediate = opcode == 0xc5;
      forms.push_back(spec);
    }
  }
  run_sse_forms(forms, 3, 200);
}

TEST(SseIntegerDifferential, ImmediateShifts) {
  std::vector<FormSpec> forms;
  for (auto [opcode, group] : {std::pair{0x71, 2},
                               {0x71, 4},
                               {0x71, 6},
                               {0x72, 2},
                               {0x72, 4},
                               {0x72, 6},
                               {0x73, 2},
                               {0x73, 6},
                               {0x73, 3},
                               {0x73, 7}}) {
    for (uint8_t prefix : {0, 0x66}) {
      if (prefix == 0 && (group == 3 || group == 7)) continue;
      FormSpec spec;
      spec.form.opcode = static_cast<uint8_t>(opcode);
      spec.form.prefix = prefix;
      spec.form.reg = static_cast<uint8_t>(group);
      spec.reg = Operand::kFixed;
      spec.rm = prefix ? Operand::kXmm : Operand::kMmx;
      spec.random_immediate = true;
      forms.push_back(spec);
    }
  }
  run_sse_forms(forms, 4, 200);
}

}  // namespace
}  // namespace lamina::cpu::x86::test
