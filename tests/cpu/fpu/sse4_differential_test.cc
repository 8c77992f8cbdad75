// Differential tests of SSSE3, SSE4.1 and SSE4.2 (string compares, CRC32) against the host.

#include <gtest/gtest.h>

#include <bit>
#include <cstdio>
#include <optional>

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

// DPPS/DPPD write one sum to every lane the immediate's low bits select (SDM vol. 2, DPPS,
// DPPD: DP_primitive). Some Intel hosts (seen on a Xeon of 2026) do not, when the products
// hold NaNs: lanes get different NaNs, and the sums meet the NaNs in another order than the
// pseudo-code's. Probed once: such a host's NaN cases are not compared (a host quirk).
bool host_dot_product_differs_by_lane() {
  // A case seen on such a host: DPPS with NaNs among the products; the SDM gives lanes 0, 2
  // and 3 one value.
  alignas(16) uint32_t destination[4] = {0x80000000, 0x0ad04377, 0x7fffffff, 0x7fffffff};
  alignas(16) const uint32_t source[4] = {0xfe81ff01, 0xff817f80, 0xfeff80fe, 0xff8081fe};
  uint32_t saved = 0;
  const uint32_t mxcsr = 0x1f80;
  asm volatile("stmxcsr %0; ldmxcsr %1" : "=m"(saved) : "m"(mxcsr));
  asm volatile("movdqa %0, %%xmm0; movdqa %1, %%xmm1; dpps $0xbd, %%xmm1, %%xmm0; movdqa %%xmm0, %0"
               : "+m"(destination)
               : "m"(source)
               : "xmm0", "xmm1");
  asm volatile("ldmxcsr %0" : : "m"(saved));
  return destination[0] != destination[2] || destination[2] != destination[3];
}

bool is_nan_lane(const Xmm& value, int lane, bool single) {
  if (single) {
    const uint32_t bits = value.lane<uint32_t>(lane);
    return (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu) != 0;
  }
  const uint64_t bits = value.lane<uint64_t>(lane);
  return (bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull && (bits & 0xfffffffffffffull) != 0;
}

TEST(Sse4Differential, Sse41DotProduct) {
  std::vector<FormSpec> forms;
  for (uint8_t opcode : {0x40, 0x41}) {
    append(forms,
           both_forms(OpcodeMap::kThreeByte3A, opcode, 0x66, Operand::kXmm, Operand::kXmm, true));
  }
  SseCaseOptions options;
  if (host_dot_product_differs_by_lane()) {
    // On such a host, a case whose selected product lanes hold a NaN (destination operand,
    // or a register source) is not compared; memory sources are not inspected, so the whole
    // case goes when the destination alone holds none but the host's lanes differ.
    std::printf("note: this host's DPPS gives lanes different NaNs; NaN cases are not compared\n");
    options.host_deviates = [](const InstructionForm& form, const SimdState& host) {
      const bool single = form.opcode == 0x40;
      const uint8_t control = form.immediate.value_or(0);
      const Xmm& result = host.xmm[form.reg & 15];
      std::optional<uint64_t> first;
      for (int lane = 0; lane < (single ? 4 : 2); ++lane) {
        if (((control >> lane) & 1) == 0) continue;
        const uint64_t value = single ? result.lane<uint32_t>(lane) : result.lane<uint64_t>(lane);
        if (first && *first != value) return true;
        first = value;
      }
      // The written lanes agree; a NaN there came through the sums.
      return first && is_nan_lane(result, std::countr_zero(static_cast<unsigned>(control & (single ? 15 : 3))), single);
    };
  }
  run_sse_forms(forms, 36, 400, options);
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
