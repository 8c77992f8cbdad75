#pragma once
// One differential case of an MMX/SSE instruction: a random state, the instruction run on the
// host and through execute_simd, and a full comparison (x87/MMX registers, tags, status,
// XMM0-15, MXCSR, general registers, RFLAGS, memory). An unmasked SSE exception on the host
// (SIGFPE) must be a kSimdException from the unit with the same state.

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "host_runner.h"
#include "test_support.h"

namespace lamina::cpu::x86::test {

// General registers the instruction may name (the stub owns rsp, rsi and rdi).
inline constexpr uint8_t kUsableGprs[] = {0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 14, 15};

struct SseCaseOptions {
  bool unmasked_exceptions = true;  // sometimes unmask MXCSR exceptions
  size_t compared_memory = 64;
  // Bytes [first, last) of memory not compared (fields that legitimately differ).
  std::vector<std::pair<size_t, size_t>> ignored_memory;
  // Adjusts the random memory operand before the case runs (e.g. a valid MXCSR image).
  std::function<void(ValueSource&, uint8_t*)> prepare_memory;
  // True when the host's result for `form` is one the SDM rules out (a host quirk): the case
  // is then not compared, only counted (run_sse_forms prints how many).
  std::function<bool(const InstructionForm& form, const SimdState& host)> host_deviates;
};

Xmm random_xmm(ValueSource& values);
SimdState random_sse_state(ValueSource& values, bool unmasked_exceptions);

// Runs one case; returns "" when host and unit agree, else a description of the difference.
// `skipped` (when given) is set when options.host_deviates ruled the host's result out.
std::string run_sse_case(HostRunner& runner, const InstructionForm& form, ValueSource& values,
                         const SseCaseOptions& options = {}, bool* skipped = nullptr);

// Which registers a ModRM field may name in random cases.
enum class Operand : uint8_t { kFixed, kXmm, kMmx, kGpr };

struct FormSpec {
  InstructionForm form;
  Operand reg = Operand::kXmm;
  Operand rm = Operand::kXmm;
  bool random_immediate = false;
};

// Register/memory variants of an SSE (`prefix` != 0 or XMM) or MMX opcode.
std::vector<FormSpec> both_forms(OpcodeMap map, uint8_t opcode, uint8_t prefix, Operand reg,
                                 Operand rm, bool immediate = false);

// Runs `cases` random cases of each form (random registers and immediates), stopping after
// five failures.
void run_sse_forms(const std::vector<FormSpec>& forms, uint32_t seed, int cases,
                   const SseCaseOptions& options = {});

}  // namespace lamina::cpu::x86::test
