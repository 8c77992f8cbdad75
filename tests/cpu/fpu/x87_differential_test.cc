// Differential tests of the x87 instructions: each case runs one instruction from a random state
// on the host CPU and through execute_simd, then compares the x87 state, memory, AX and the
// arithmetic flags bit for bit.

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <tuple>

#include "cpu/x86/simd/simd_state.h"
#include "cpu/x86/simd/simd_unit.h"
#include "host_runner.h"
#include "test_support.h"

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

std::string describe(const SimdState& state) {
  std::ostringstream out;
  out << "cw=" << hex(&state.control, 2) << " sw=" << hex(&state.status, 2)
      << " tags=" << hex(&state.tag_valid, 1) << "\n";
  for (unsigned i = 0; i < 8; ++i) {
    out << "  R" << i << "=" << hex(&state.x87[i].sign_exponent, 2) << ":"
        << hex(&state.x87[i].significand, 8) << "\n";
  }
  return out.str();
}

SimdState random_x87_state(ValueSource& values, bool always_random_masks) {
  SimdState state;
  for (auto& reg : state.x87) reg = values.extended();
  state.tag_valid = 0;
  for (unsigned i = 0; i < 8; ++i) {
    if (values.chance(80)) state.tag_valid = static_cast<uint8_t>(state.tag_valid | (1u << i));
  }
  uint16_t masks =
      (!always_random_masks && values.chance(70)) ? 0x3f : static_cast<uint16_t>(values.bits(6));
  uint16_t precision = static_cast<uint16_t>(values.chance(60) ? 3 : values.below(4));
  state.control = static_cast<uint16_t>(0x40 | masks | (precision << 8) | (values.bits(2) << 10));
  // Flags only where masked, so no exception is pending before the instruction.
  uint16_t flags = static_cast<uint16_t>(values.bits(7) & (masks | 0x40));
  state.status = static_cast<uint16_t>(flags | (values.bits(16) & 0x4700));
  state.set_top(static_cast<unsigned>(values.bits(3)));
  return state;
}

void fill_memory_operand(ValueSource& values, uint8_t escape, unsigned reg, uint8_t* memory) {
  for (size_t i = 0; i < 128; ++i) memory[i] = static_cast<uint8_t>(values.bits(8));
  auto put = [&](auto value) { std::memcpy(memory, &value, sizeof(value)); };
  switch (escape) {
    case 0xd8: put(values.float32()); break;
    case 0xd9:
      if (reg == 0) put(values.float32());
      break;
    case 0xdc: put(values.float64()); break;
    case 0xdd:
      if (reg == 0) put(values.float64());
      break;
    case 0xda: put(static_cast<int32_t>(values.integer(32))); break;
    case 0xde: put(static_cast<int16_t>(values.integer(16))); break;
    case 0xdb:
      if (reg == 0) put(static_cast<int32_t>(values.integer(32)));
      if (reg == 5) {
        X87Register value = values.extended();
        std::memcpy(memory, &value.significand, 8);
        std::memcpy(memory + 8, &value.sign_exponent, 2);
      }
      break;
    case 0xdf:
      if (reg == 0) put(static_cast<int16_t>(values.integer(16)));
      if (reg == 5) put(values.integer(64));
      if (reg == 4) {
        for (int i = 0; i < 9; ++i) {
          memory[i] = values.chance(95)
                          ? static_cast<uint8_t>(values.below(10) * 16 + values.below(10))
                          : static_cast<uint8_t>(values.bits(8));
        }
        memory[9] &= 0x80;
      }
      break;
    default: break;
  }
  // FLDENV/FRSTOR images: random words, and extended values for the registers.
  if ((escape == 0xd9 || escape == 0xdd) && reg == 4) {
    for (int i = 0; i < 8; ++i) {
      X87Register value = values.extended();
      std::memcpy(memory + 28 + 10 * i, &value.significand, 8);
      std::memcpy(memory + 36 + 10 * i, &value.sign_exponent, 2);
    }
  }
}

struct Mismatch {
  std::string message;
};

// Runs one random case; returns an empty message when host and unit agree.
std::string run_case(HostRunner& runner, const InstructionForm& form, ValueSource& values,
                     size_t compared_memory, bool always_random_masks = false) {
  Encoded encoded = encode(form);
  SimdState initial = random_x87_state(values, always_random_masks);
  TestOperands operands;
  if (form.memory) fill_memory_operand(values, form.opcode, form.reg, operands.memory.data());
  for (auto& reg : operands.gpr) reg = values.bits(64);
  operands.rflags = 0x2 | (values.bits(12) & 0x8d5);

  HostMachine machine;
  state_to_fxsave(initial, machine.fxsave);
  machine.gpr = operands.gpr;
  machine.rflags = operands.rflags;
  std::array<uint8_t, kTestMemorySize> host_memory = operands.memory;
  bool host_fault = runner.run(encoded.bytes, machine, host_memory.data());
  SimdState expected = initial;
  fxsave_to_state(machine.fxsave, expected);

  SimdState actual = initial;
  SimdControl control;
  SimdOutcome outcome = execute_simd(actual, control, encoded.instruction, operands);

  std::ostringstream out;
  if (host_fault) out << "host raised SIGFPE\n";
  if (outcome != SimdOutcome::kDone) out << "outcome " << static_cast<int>(outcome) << "\n";
  bool same = expected.control == actual.control && expected.status == actual.status &&
              expected.tag_valid == actual.tag_valid && expected.x87 == actual.x87;
  if (!same) out << "state differs\n";
  if (std::memcmp(host_memory.data(), operands.memory.data(), compared_memory) != 0) {
    out << "memory differs: host " << hex(host_memory.data(), compared_memory) << " unit "
        << hex(operands.memory.data(), compared_memory) << "\n";
  }
  if ((machine.gpr[0] & 0xffff) != (operands.gpr[0] & 0xffff)) out << "AX differs\n";
  if ((machine.rflags & 0x8d5) != (operands.rflags & 0x8d5)) {
    out << "rflags differ: host " << hex(&machine.rflags, 2) << " unit " << hex(&operands.rflags, 2)
        << "\n";
  }
  if (out.str().empty()) return {};
  out << "instruction " << hex(encoded.bytes.data(), encoded.bytes.size()) << " (bytes reversed)\n"
      << "memory operand " << hex(host_memory.data(), 16) << " (before: see case)\n"
      << "initial " << describe(initial) << "host " << describe(expected) << "unit "
      << describe(actual);
  return out.str();
}

bool valid_register_form(uint8_t escape, uint8_t modrm) {
  unsigned reg = (modrm >> 3) & 7;
  switch (escape) {
    case 0xd9:
      if (reg == 2) return modrm == 0xd0;
      if (reg == 4) return modrm == 0xe0 || modrm == 0xe1 || modrm == 0xe4 || modrm == 0xe5;
      if (reg == 5) return modrm != 0xef;
      return true;
    case 0xda: return reg < 4 || modrm == 0xe9;
    case 0xdb: return reg < 4 || reg == 5 || reg == 6 || (modrm >= 0xe0 && modrm <= 0xe4);
    case 0xdd: return reg < 6;
    case 0xde: return reg != 3 || modrm == 0xd9;
    case 0xdf: return reg <= 3 || reg == 5 || reg == 6 || modrm == 0xe0;
    default: return true;
  }
}

// Memory forms compared by this test; the environment forms are tested separately because
// their pointer fields hold host addresses.
bool compared_memory_form(uint8_t escape, unsigned reg) {
  switch (escape) {
    case 0xd9: return reg == 0 || reg == 2 || reg == 3 || reg == 5 || reg == 7;
    case 0xdb: return reg != 4 && reg != 6;
    case 0xdd: return reg < 4 || reg == 7;
    default: return true;
  }
}

size_t stored_size(uint8_t escape, unsigned reg) {
  switch (escape) {
    case 0xd9: return reg == 7 ? 2 : 4;
    case 0xdb: return reg == 7 ? 10 : 4;
    case 0xdd: return reg == 7 ? 2 : 8;
    case 0xdf: return reg == 4 || reg == 6 ? 10 : (reg >= 5 ? 8 : 2);
    default: return 0;
  }
}

void run_forms(const std::vector<InstructionForm>& forms, uint32_t seed, int cases_per_form,
               bool always_random_masks = false) {
  HostRunner runner;
  ValueSource values(seed);
  int failures = 0;
  for (const InstructionForm& form : forms) {
    for (int i = 0; i < cases_per_form && failures < 5; ++i) {
      size_t compared = form.memory ? stored_size(form.opcode, form.reg) : 0;
      std::string message = run_case(runner, form, values, compared, always_random_masks);
      if (!message.empty()) {
        ADD_FAILURE() << message;
        ++failures;
      }
    }
  }
}

std::vector<InstructionForm> register_forms(uint8_t escape) {
  std::vector<InstructionForm> forms;
  for (unsigned modrm = 0xc0; modrm <= 0xff; ++modrm) {
    if (!valid_register_form(escape, static_cast<uint8_t>(modrm))) continue;
    InstructionForm form;
    form.map = OpcodeMap::kOneByte;
    form.opcode = escape;
    form.reg = (modrm >> 3) & 7;
    form.rm = modrm & 7;
    forms.push_back(form);
  }
  return forms;
}

std::vector<InstructionForm> memory_forms(uint8_t escape) {
  std::vector<InstructionForm> forms;
  for (unsigned reg = 0; reg < 8; ++reg) {
    if (!compared_memory_form(escape, reg)) continue;
    InstructionForm form;
    form.map = OpcodeMap::kOneByte;
    form.opcode = escape;
    form.reg = static_cast<uint8_t>(reg);
    form.memory = true;
    forms.push_back(form);
  }
  return forms;
}

// FNSTENV/FNSAVE (32- and 16-bit layouts, with and without 66h) and FLDENV/FRSTOR from random
// images. The pointer fields start as zero on both sides (FXRSTOR of a zero FIP/FDP/FOP on the
// host), so the whole image is compared.
TEST(X87Differential, EnvironmentAndSaveForms) {
  HostRunner runner;
  ValueSource values(0xe5);
  int failures = 0;
  for (uint8_t prefix : {0, 0x66}) {
    for (auto [escape, reg, size] :
         {std::tuple{0xd9, 6, 28}, {0xdd, 6, 108}, {0xd9, 4, 28}, {0xdd, 4, 108}}) {
      InstructionForm form;
      form.map = OpcodeMap::kOneByte;
      form.opcode = static_cast<uint8_t>(escape);
      form.reg = static_cast<uint8_t>(reg);
      form.prefix = prefix;
      form.memory = true;
      for (int i = 0; i < 300 && failures < 5; ++i) {
        std::string message = run_case(runner, form, values, prefix ? size - 14 : size);
        if (!message.empty()) {
          ADD_FAILURE() << message;
          ++failures;
        }
      }
    }
  }
}

TEST(X87Differential, ArithmeticRegisterForms) {
  for (uint8_t escape : {0xd8, 0xdc, 0xde}) run_forms(register_forms(escape), escape, 80);
}

TEST(X87Differential, ArithmeticMemoryForms) {
  for (uint8_t escape : {0xd8, 0xdc, 0xda, 0xde}) run_forms(memory_forms(escape), escape, 800);
}

TEST(X87Differential, D9RegisterGroup) { run_forms(register_forms(0xd9), 0xd9, 200); }

TEST(X87Differential, CompareMoveAndControlRegisterForms) {
  for (uint8_t escape : {0xda, 0xdb, 0xdd, 0xdf}) run_forms(register_forms(escape), escape, 100);
}

TEST(X87Differential, LoadStoreMemoryForms) {
  for (uint8_t escape : {0xd9, 0xdb, 0xdd, 0xdf}) run_forms(memory_forms(escape), escape, 1000);
}

// Every case with random exception masks: the unmasked responses (no store, no pop,
// bias-adjusted results, flags) in bulk.
TEST(X87Differential, UnmaskedExceptions) {
  for (uint8_t escape : {0xd8, 0xd9, 0xdc, 0xde})
    run_forms(register_forms(escape), 0x100 + escape, 60, true);
  for (uint8_t escape : {0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf}) {
    run_forms(memory_forms(escape), 0x200 + escape, 300, true);
  }
}

}  // namespace
}  // namespace lamina::cpu::x86::test
