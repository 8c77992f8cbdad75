// Differential test of instruction sequences: random mixes of x87, MMX and SSE instructions run
// back to back on the host and through the unit, so that state carried between instructions
// (the x87 stack and tags across MMX use, MXCSR flags, condition codes) is compared too.
// Exceptions stay masked: an unmasked x87 exception would fault on the host's next waiting
// instruction.

#include <gtest/gtest.h>

#include <sstream>

#include "sse_case.h"

namespace lamina::cpu::x86::test {
namespace {

struct PoolEntry {
  OpcodeMap map;
  uint8_t opcode;
  uint8_t prefix;
  Operand reg;
  Operand rm;
  bool immediate = false;
  bool memory_allowed = true;
};

const PoolEntry kPool[] = {
    {OpcodeMap::kTwoByte, 0x58, 0, Operand::kXmm, Operand::kXmm},                   // ADDPS
    {OpcodeMap::kTwoByte, 0x59, 0xf2, Operand::kXmm, Operand::kXmm},                // MULSD
    {OpcodeMap::kTwoByte, 0x5e, 0x66, Operand::kXmm, Operand::kXmm},                // DIVPD
    {OpcodeMap::kTwoByte, 0x51, 0xf3, Operand::kXmm, Operand::kXmm},                // SQRTSS
    {OpcodeMap::kTwoByte, 0xc2, 0, Operand::kXmm, Operand::kXmm, true},             // CMPPS
    {OpcodeMap::kTwoByte, 0x5a, 0xf2, Operand::kXmm, Operand::kXmm},                // CVTSD2SS
    {OpcodeMap::kTwoByte, 0x2d, 0xf2, Operand::kGpr, Operand::kXmm},                // CVTSD2SI
    {OpcodeMap::kTwoByte, 0x2f, 0x66, Operand::kXmm, Operand::kXmm},                // COMISD
    {OpcodeMap::kTwoByte, 0xfe, 0x66, Operand::kXmm, Operand::kXmm},                // PADDD xmm
    {OpcodeMap::kTwoByte, 0xfc, 0, Operand::kMmx, Operand::kMmx},                   // PADDB mm
    {OpcodeMap::kTwoByte, 0x6f, 0, Operand::kMmx, Operand::kMmx},                   // MOVQ mm
    {OpcodeMap::kTwoByte, 0xd6, 0xf3, Operand::kXmm, Operand::kMmx, false, false},  // MOVQ2DQ
    {OpcodeMap::kTwoByte, 0x70, 0x66, Operand::kXmm, Operand::kXmm, true},          // PSHUFD
    {OpcodeMap::kTwoByte, 0xd7, 0x66, Operand::kGpr, Operand::kXmm, false, false},  // PMOVMSKB
    {OpcodeMap::kThreeByte38, 0x00, 0x66, Operand::kXmm, Operand::kXmm},            // PSHUFB
    {OpcodeMap::kThreeByte3A, 0x63, 0x66, Operand::kXmm, Operand::kXmm, true},      // PCMPISTRI
    {OpcodeMap::kOneByte, 0xd8, 0, Operand::kFixed, Operand::kFixed},               // x87 D8 group
    {OpcodeMap::kOneByte, 0xd9, 0, Operand::kFixed, Operand::kFixed},               // x87 D9 group
    {OpcodeMap::kOneByte, 0xde, 0, Operand::kFixed, Operand::kFixed},               // x87 DE group
    {OpcodeMap::kOneByte, 0xdd, 0, Operand::kFixed, Operand::kFixed},               // FLD/FST m64
};

// x87 forms used in sequences: register arithmetic, loads, stores and pushes.
InstructionForm x87_form(ValueSource& values, uint8_t escape) {
  InstructionForm form;
  form.map = OpcodeMap::kOneByte;
  form.opcode = escape;
  switch (escape) {
    case 0xd9: {
      static constexpr uint8_t kModrm[] = {0xc0, 0xc1, 0xc9, 0xe0, 0xe1, 0xe5, 0xe8, 0xeb,
                                           0xee, 0xfa, 0xfc, 0xf6, 0xf7, 0xf4, 0xf8, 0xfd};
      uint8_t modrm = kModrm[values.below(sizeof(kModrm))];
      form.reg = (modrm >> 3) & 7;
      form.rm = modrm & 7;
      return form;
    }
    case 0xdd:  // FLD m64 or FSTP m64
      form.memory = true;
      form.reg = values.chance(50) ? 0 : 3;
      return form;
    default:
      form.reg = static_cast<uint8_t>(values.below(8));
      if (escape == 0xde && form.reg == 3) form.reg = 2;
      form.rm = static_cast<uint8_t>(values.below(8));
      form.memory = escape == 0xd8 && values.chance(30);
      return form;
  }
}

uint8_t pick(ValueSource& values, Operand kind) {
  switch (kind) {
    case Operand::kXmm: return static_cast<uint8_t>(values.below(16));
    case Operand::kMmx: return static_cast<uint8_t>(values.below(8));
    case Operand::kGpr: return kUsableGprs[values.below(sizeof(kUsableGprs))];
    default: return 0;
  }
}

TEST(SequenceDifferential, MixedX87MmxSse) {
  HostRunner runner;
  ValueSource values(77);
  int failures = 0;
  for (int sequence = 0; sequence < 2000 && failures < 3; ++sequence) {
    std::vector<Encoded> instructions;
    std::vector<uint8_t> bytes;
    for (int i = 0; i < 10; ++i) {
      const PoolEntry& entry = kPool[values.below(sizeof(kPool) / sizeof(kPool[0]))];
      InstructionForm form;
      if (entry.map == OpcodeMap::kOneByte) {
        form = x87_form(values, entry.opcode);
      } else {
        form.map = entry.map;
        form.opcode = entry.opcode;
        form.prefix = entry.prefix;
        form.reg = pick(values, entry.reg);
        form.memory = entry.memory_allowed && values.chance(25);
        if (!form.memory) form.rm = pick(values, entry.rm);
        if (entry.immediate) form.immediate = static_cast<uint8_t>(values.bits(8));
      }
      Encoded encoded = encode(form);
      bytes.insert(bytes.end(), encoded.bytes.begin(), encoded.bytes.end());
      instructions.push_back(encoded);
    }
    SimdState initial = random_sse_state(values, false);
    initial.control = static_cast<uint16_t>(0x037f | (values.bits(2) << 10));
    // A valid x87 stack: some registers in use from TOP down.
    for (auto& reg : initial.x87) reg = values.extended();
    initial.tag_valid = static_cast<uint8_t>(values.bits(8));
    TestOperands operands;
    for (size_t i = 0; i < 64; ++i) operands.memory[i] = static_cast<uint8_t>(values.bits(8));
    uint64_t value = values.float64();
    std::memcpy(operands.memory.data(), &value, 8);
    for (auto& reg : operands.gpr) reg = values.bits(64);
    operands.rflags = 0x2;

    HostMachine machine;
    state_to_fxsave(initial, machine.fxsave);
    machine.gpr = operands.gpr;
    machine.rflags = operands.rflags;
    alignas(64) std::array<uint8_t, kTestMemorySize> host_memory = operands.memory;
    bool host_fault = runner.run(bytes, machine, host_memory.data());
    SimdState expected = initial;
    fxsave_to_state(machine.fxsave, expected);

    SimdState actual = initial;
    SimdControl control;
    bool unit_fault = false;
    for (const Encoded& encoded : instructions) {
      if (execute_simd(actual, control, encoded.instruction, operands) != SimdOutcome::kDone) {
        unit_fault = true;
        break;
      }
    }
    std::ostringstream out;
    if (host_fault || unit_fault)
      out << "fault: host " << host_fault << " unit " << unit_fault << "\n";
    if (!(expected.status == actual.status && expected.tag_valid == actual.tag_valid &&
          expected.x87 == actual.x87 && expected.xmm == actual.xmm &&
          expected.mxcsr == actual.mxcsr)) {
      out << "state differs\n";
    }
    for (uint8_t reg : kUsableGprs) {
      if (machine.gpr[reg] != operands.gpr[reg]) out << "gpr" << int{reg} << " differs\n";
    }
    if ((machine.rflags & 0x8d5) != (operands.rflags & 0x8d5)) out << "rflags differ\n";
    if (std::memcmp(host_memory.data(), operands.memory.data(), 64) != 0) out << "memory differs\n";
    if (!out.str().empty()) {
      out << "sequence " << sequence << ":";
      for (const Encoded& encoded : instructions) {
        out << " [";
        for (uint8_t byte : encoded.bytes) out << std::hex << int{byte} << " ";
        out << "]";
      }
      ADD_FAILURE() << out.str();
      ++failures;
    }
  }
}

}  // namespace
}  // namespace lamina::cpu::x86::test
