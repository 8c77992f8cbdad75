#include "sse_case.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <sstream>

namespace lamina::cpu::x86::test {
namespace {

std::string hex(const void* data, size_t size) {
  std::ostringstream out;
  const auto* bytes = static_cast<const uint8_t*>(data);
  for (size_t i = size; i-- > 0;) {
    out << "0123456789abcdef"[bytes[i] >> 4] << "0123456789abcdef"[bytes[i] & 15];
  }
  return out.str();
}

std::string describe(const SimdState& state, const std::array<uint64_t, 16>& gpr, uint64_t flags) {
  std::ostringstream out;
  out << "mxcsr=" << hex(&state.mxcsr, 4) << " fsw=" << hex(&state.status, 2)
      << " ftw=" << hex(&state.tag_valid, 1) << " rflags=" << hex(&flags, 2) << "\n";
  for (unsigned i = 0; i < 16; ++i) {
    out << "  xmm" << i << "=" << hex(state.xmm[i].bytes.data(), 16);
    if (i < 8)
      out << " mm" << i << "=" << hex(&state.x87[i].sign_exponent, 2) << ":"
          << hex(&state.x87[i].significand, 8);
    out << " gpr" << i << "=" << hex(&gpr[i], 8) << "\n";
  }
  return out.str();
}

}  // namespace

Xmm random_xmm(ValueSource& values) {
  Xmm value;
  switch (values.below(5)) {
    case 0:
      for (auto& byte : value.bytes) byte = static_cast<uint8_t>(values.bits(8));
      break;
    case 1:
      for (unsigned i = 0; i < 4; ++i) value.set_lane<uint32_t>(i, values.float32());
      break;
    case 2:
      for (unsigned i = 0; i < 2; ++i) value.set_lane<uint64_t>(i, values.float64());
      break;
    case 3: {
      static constexpr uint8_t kBytes[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x81};
      for (auto& byte : value.bytes) byte = kBytes[values.below(sizeof(kBytes))];
      break;
    }
    default:
      for (unsigned i = 0; i < 4; ++i)
        value.set_lane<int32_t>(i, static_cast<int32_t>(values.integer(32)));
      break;
  }
  return value;
}

SimdState random_sse_state(ValueSource& values, bool unmasked_exceptions) {
  SimdState state;
  for (auto& reg : state.xmm) reg = random_xmm(values);
  for (auto& reg : state.x87) {
    Xmm bits = random_xmm(values);
    reg.significand = bits.lane<uint64_t>(0);
    reg.sign_exponent = values.chance(50) ? 0xffff : static_cast<uint16_t>(values.bits(16));
  }
  state.tag_valid = static_cast<uint8_t>(values.bits(8));
  state.control = 0x037f;
  state.status = static_cast<uint16_t>(values.bits(3) << 11);
  uint32_t masks = (!unmasked_exceptions || values.chance(60))
                       ? kMxcsrMasks
                       : static_cast<uint32_t>(values.bits(6)) << 7;
  state.mxcsr = static_cast<uint32_t>(values.bits(6)) | masks |
                (static_cast<uint32_t>(values.bits(2)) << 13) |
                (values.chance(20) ? kMxcsrFlushToZero : 0) |
                (values.chance(20) ? kMxcsrDenormalsAreZeros : 0);
  return state;
}

std::string run_sse_case(HostRunner& runner, const InstructionForm& form, ValueSource& values,
                         const SseCaseOptions& options, bool* skipped) {
  Encoded encoded = encode(form);
  SimdState initial = random_sse_state(values, options.unmasked_exceptions);
  TestOperands operands;
  for (size_t i = 0; i < 512; i += 16) {
    Xmm chunk = random_xmm(values);
    std::memcpy(operands.memory.data() + i, chunk.bytes.data(), 16);
  }
  if (options.prepare_memory) options.prepare_memory(values, operands.memory.data());
  for (auto& reg : operands.gpr) {
    // Small values too: string lengths (RAX/RDX) and element counts near their limits.
    reg = values.chance(60)   ? values.bits(64)
          : values.chance(50) ? static_cast<uint64_t>(static_cast<int64_t>(values.below(40)) - 20)
                              : static_cast<uint64_t>(values.integer(32));
  }
  operands.rflags = 0x2 | (values.bits(12) & 0x8d5);
  const std::array<uint64_t, 16> initial_gpr = operands.gpr;

  HostMachine machine;
  state_to_fxsave(initial, machine.fxsave);
  machine.gpr = operands.gpr;
  machine.rflags = operands.rflags;
  alignas(64) std::array<uint8_t, kTestMemorySize> host_memory = operands.memory;
  bool host_fault = runner.run(encoded.bytes, machine, host_memory.data());
  SimdState expected = initial;
  fxsave_to_state(machine.fxsave, expected);
  if (options.host_deviates && !host_fault && options.host_deviates(form, expected)) {
    if (skipped != nullptr) *skipped = true;
    return "";
  }

  SimdState actual = initial;
  SimdControl control;
  SimdOutcome outcome = execute_simd(actual, control, encoded.instruction, operands);

  std::ostringstream out;
  SimdOutcome wanted = host_fault ? SimdOutcome::kSimdException : SimdOutcome::kDone;
  if (outcome != wanted) {
    out << "outcome " << static_cast<int>(outcome) << ", host " << (host_fault ? "SIGFPE" : "done")
        << "\n";
  }
  bool same = expected.control == actual.control && expected.status == actual.status &&
              expected.tag_valid == actual.tag_valid && expected.x87 == actual.x87 &&
              expected.xmm == actual.xmm && expected.mxcsr == actual.mxcsr;
  if (!same) out << "state differs\n";
  for (uint8_t reg : kUsableGprs) {
    if (machine.gpr[reg] != operands.gpr[reg]) out << "gpr" << int{reg} << " differs\n";
  }
  if ((machine.rflags & 0x8d5) != (operands.rflags & 0x8d5)) out << "rflags differ\n";
  std::array<uint8_t, kTestMemorySize> unit_memory = operands.memory;
  for (auto [first, last] : options.ignored_memory) {
    std::memset(host_memory.data() + first, 0, last - first);
    std::memset(unit_memory.data() + first, 0, last - first);
  }
  if (std::memcmp(host_memory.data(), unit_memory.data(), options.compared_memory) != 0) {
    out << "memory differs: host " << hex(host_memory.data(), options.compared_memory) << "\n unit "
        << hex(unit_memory.data(), options.compared_memory) << "\n";
  }
  if (out.str().empty()) return {};
  out << "instruction " << hex(encoded.bytes.data(), encoded.bytes.size()) << " (bytes reversed)\n"
      << "initial " << describe(initial, initial_gpr, 0) << "host "
      << describe(expected, machine.gpr, machine.rflags) << "unit "
      << describe(actual, operands.gpr, operands.rflags);
  return out.str();
}

std::vector<FormSpec> both_forms(OpcodeMap map, uint8_t opcode, uint8_t prefix, Operand reg,
                                 Operand rm, bool immediate) {
  std::vector<FormSpec> forms;
  for (bool memory : {false, true}) {
    FormSpec spec;
    spec.form.map = map;
    spec.form.opcode = opcode;
    spec.form.prefix = prefix;
    spec.form.memory = memory;
    spec.reg = reg;
    spec.rm = rm;
    spec.random_immediate = immediate;
    forms.push_back(spec);
  }
  return forms;
}

namespace {

uint8_t pick(ValueSource& values, Operand kind, uint8_t fixed) {
  switch (kind) {
    case Operand::kXmm: return static_cast<uint8_t>(values.below(16));
    case Operand::kMmx: return static_cast<uint8_t>(values.below(8));
    case Operand::kGpr: return kUsableGprs[values.below(sizeof(kUsableGprs))];
    default: return fixed;
  }
}

}  // namespace

void run_sse_forms(const std::vector<FormSpec>& forms, uint32_t seed, int cases,
                   const SseCaseOptions& options) {
  HostRunner runner;
  ValueSource values(seed);
  int failures = 0, skipped = 0, ran = 0;
  for (const FormSpec& spec : forms) {
    for (int i = 0; i < cases && failures < 5; ++i) {
      InstructionForm varied = spec.form;
      varied.reg = pick(values, spec.reg, spec.form.reg);
      if (!varied.memory) varied.rm = pick(values, spec.rm, spec.form.rm);
      if (spec.random_immediate) {
        // Small values half of the time: shift counts and element indexes near their limits.
        varied.immediate =
            static_cast<uint8_t>(values.chance(50) ? values.below(20) : values.bits(8));
      }
      bool deviated = false;
      std::string message = run_sse_case(runner, varied, values, options, &deviated);
      ++ran;
      if (deviated) ++skipped;
      if (!message.empty()) {
        ADD_FAILURE() << message;
        ++failures;
      }
    }
  }
  if (skipped != 0) {
    std::printf("note: %d of %d cases not compared: this host's result is one the SDM rules out\n",
                skipped, ran);
  }
  // A quirk check that ruled out most cases would leave the forms untested.
  EXPECT_LT(skipped * 4, ran) << "too many cases ruled out as host quirks";
}

}  // namespace lamina::cpu::x86::test
