// Differential tests of SSSE3, SSE4.1 and SSE4.2 (string compares, CRC32) against the host.

#include <gtest/gtest.h>

#include "sse_case.h"

namespace lamina::cpu::x86::test {
namespace {

void append(std::vector<FormSpec>& to, const std::vector<FormSpec>& from) {
  to.insert(to.end(), from.begin(), from.end());
}

TEST(Sse4Differential, Ssse3OnMmxAndXmm) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode :
       {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x1c, 0x1d, 0x1e}) {
    append(forms, both_forms(OpcodeMap::kThreeByte38, opcode, 0, Operand::kMmx, Operand::kMmx));
    append(forms, both_forms(OpcodeMap::kThreeByte38, opcode, 0x66, Operand::kXmm, Operand::kXmm));
  }
  append(forms, both_forms(OpcodeMap::kThreeByte3A, 0x0f, 0, Operand::kMmx, Operand::kMmx, true));
  append(forms,
         both_forms(OpcodeMap::kThreeByte3A, 0x0f, 0x66, Operand::kXmm, Operand::kXmm, true));
  run_sse_forms(forms, 30, 100);
}

TEST(Sse4Differential, Sse41IntegerAndBlends) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode :
       {0x10, 0x14, 0x15, 0x17, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x28, 0x29, 0x2b, 0x30, 0x31,
        0x32, 0x33, 0x34, 0x35, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x41}) {
    append(forms, both_forms(OpcodeMap::kThreeByte38, opcode, 0x66, Operand::kXmm, Operand::kXmm));
  }
  FormSpec load;
  load.form.map = OpcodeMap::kThreeByte38;
  load.form.opcode = 0x2a;
  load.form.prefix = 0x66;
  load.form.memory = true;
  forms.push_back(load);
  for (uint8_t opcode : {0x0c, 0x0d, 0x0e, 0x42}) {
    append(forms,
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kXmm, true));
  }
  run_sse_forms(forms, 31, 100);
}

TEST(Sse4Differential, Sse41InsertExtract) {
  std::vector<FormSpec> forms;
  for (bool rex_w : {false, true}) {
    for (uint8_t opcode : {0x14, 0x15, 0x16, 0x17}) {
      for (FormSpec spec :
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kGpr, true)) {
        spec.form.rex_w = rex_w && opcode == 0x16;
        forms.push_back(spec);
      }
    }
    for (uint8_t opcode : {0x20, 0x22}) {
      for (FormSpec spec :
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kGpr, true)) {
        spec.form.rex_w = rex_w && opcode == 0x22;
        forms.push_back(spec);
      }
    }
  }
  append(forms,
         both_forms(OpcodeMap::kThreeByte3A, 0x21, 0x66, Operand::kXmm, Operand::kXmm, true));
  run_sse_forms(forms, 32, 100);
}

TEST(Sse4Differential, Sse41Round) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x08, 0x09, 0x0a, 0x0b}) {
    append(forms,
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kXmm, true));
  }
  run_sse_forms(forms, 33, 300);
}

TEST(Sse4Differential, Sse41DotProduct) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x40, 0x41}) {
    append(forms,
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kXmm, true));
  }
  run_sse_forms(forms, 36, 400);
}

TEST(Sse4Differential, Sse42StringCompares) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x60, 0x61, 0x62, 0x63}) {
    for (bool rex_w : {false, true}) {
      for (FormSpec spec :
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kXmm, true)) {
        spec.form.rex_w = rex_w;
        forms.push_back(spec);
      }
    }
  }
  run_sse_forms(forms, 34, 400);
}

TEST(Sse4Differential, Crc32) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0xf0, 0xf1}) {
    for (bool rex_w : {false, true}) {
      for (bool word : {false, true}) {
        if (word && (opcode == 0xf0 || rex_w)) continue;
        for (FormSpec spec :
             both_forms(OpcodeMap::kThreeByte38, opcode, 0xf2, Operand::kGpr, Operand::kGpr)) {
          spec.form.rex_w = rex_w;
          spec.form.operand_size_prefix = word;
          forms.push_back(spec);
        }
      }
    }
  }
  run_sse_forms(forms, 35, 200);
}

}  // namespace
}  // namespace lamina::cpu::x86::test
