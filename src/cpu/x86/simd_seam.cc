// The one place where the core hands x87/MMX/SSE instructions to the SIMD unit
// (simd/simd_unit.h): decoded form, control bits, memory through the MMU, outcome to
// exception.
#include "cpu/x86/simd_seam.h"

#include "cpu/x86/decoder.h"
#include "cpu/x86/handlers.h"

namespace lamina::cpu::x86 {

SimdInstruction to_simd_instruction(const Instruction& in) {
  SimdInstruction out;
  switch (in.map()) {
    case kMap0F: out.map = OpcodeMap::kTwoByte; break;
    case kMap0F38: out.map = OpcodeMap::kThreeByte38; break;
    case kMap0F3A: out.map = OpcodeMap::kThreeByte3A; break;
    default: out.map = OpcodeMap::kOneByte; break;
  }
  out.opcode = in.opcode_byte();
  out.mandatory_prefix = in.mandatory_prefix;
  out.operand_size_prefix = in.operand_size_prefix;
  out.rex_w = in.rex_w;
  out.modrm = in.modrm;
  out.reg = in.reg;
  out.rm = in.rm;
  out.memory_operand = in.memory;
  out.immediate = static_cast<uint8_t>(in.immediate);
  out.address_size = static_cast<uint8_t>(in.address_size * 8);
  out.operand_size = static_cast<uint8_t>(in.operand_size * 8);
  out.long_mode_64 = in.mode == CodeMode::k64;
  out.rex = in.rex;
  return out;
}

SimdControl simd_control(const CpuState& state) {
  SimdControl control;
  control.cr0_em = state.cr0 & cr0::kEm;
  control.cr0_ts = state.cr0 & cr0::kTs;
  control.cr0_mp = state.cr0 & cr0::kMp;
  control.cr0_ne = state.cr0 & cr0::kNe;
  control.cr4_osfxsr = state.cr4 & cr4::kOsfxsr;
  control.cr4_osxmmexcpt = state.cr4 & cr4::kOsxmmexcpt;
  control.protected_mode = state.protected_mode() && !state.virtual_8086();
  return control;
}

CoreSimdOperands::CoreSimdOperands(CpuCore& core, const Instruction& in)
    : core_(core), instruction_(in), effective_address_(in.memory ? core.effective_address(in) : 0) {}

bool CoreSimdOperands::read_memory(uint64_t offset, std::span<std::byte> data) {
  try {
    size_t done = 0;
    while (done < data.size()) {
      const size_t chunk = data.size() - done >= 8 ? 8 : 1;
      const uint64_t value = core_.read_sized(instruction_.segment, effective_address_ + offset + done,
                                              static_cast<uint8_t>(chunk));
      std::memcpy(data.data() + done, &value, chunk);
      done += chunk;
    }
    return true;
  } catch (const GuestFault& fault) {
    fault_ = fault;
    return false;
  }
}

bool CoreSimdOperands::write_memory(uint64_t offset, std::span<const std::byte> data) {
  try {
    // Check every page first so a fault leaves memory unchanged (the store is all-or-nothing).
    const uint64_t start = effective_address_ + offset;
    for (uint64_t position = 0; position < data.size(); position += 4096)
      (void)core_.linear_address(instruction_.segment, start + position, 1, Access::kWrite);
    (void)core_.linear_address(instruction_.segment, start + data.size() - 1, 1, Access::kWrite);
    size_t done = 0;
    while (done < data.size()) {
      const size_t chunk = data.size() - done >= 8 ? 8 : 1;
      uint64_t value = 0;
      std::memcpy(&value, data.data() + done, chunk);
      core_.write_sized(instruction_.segment, start + done, static_cast<uint8_t>(chunk), value);
      done += chunk;
    }
    return true;
  } catch (const GuestFault& fault) {
    fault_ = fault;
    return false;
  }
}

uint64_t CoreSimdOperands::read_gpr(uint8_t index) { return core_.state.gpr[index & 15]; }

void CoreSimdOperands::write_gpr(uint8_t index, uint64_t value, uint8_t bytes) {
  core_.write_register_sized(index & 15, bytes == 8 ? 8 : 4, true, value);
}

void raise_simd_outcome(SimdOutcome outcome, const CpuState& state, const CoreSimdOperands& operands) {
  switch (outcome) {
    case SimdOutcome::kDone: return;
    case SimdOutcome::kNotSimd:
    case SimdOutcome::kInvalidOpcode: raise_fault(vector::kInvalidOpcode);
    case SimdOutcome::kDeviceNotAvailable: raise_fault(vector::kDeviceNotAvailable);
    case SimdOutcome::kFloatingPointError: raise_fault(vector::kFloatingPoint);
    case SimdOutcome::kSimdException:
      // #XM needs CR4.OSXMMEXCPT; without it the exception is #UD (SDM vol. 3A, 2.5).
      raise_fault((state.cr4 & cr4::kOsxmmexcpt) ? vector::kSimdFloatingPoint : vector::kInvalidOpcode);
    case SimdOutcome::kGeneralProtection: raise_fault(vector::kGeneralProtection, 0);
    case SimdOutcome::kMemoryFault:
      if (operands.fault()) throw *operands.fault();
      raise_fault(vector::kGeneralProtection, 0);
  }
}

namespace {

void simd_instruction(CpuCore& core, const Instruction& in) {
  CoreSimdOperands operands(core, in);
  const SimdOutcome outcome =
      execute_simd(core.state.simd, simd_control(core.state), to_simd_instruction(in), operands);
  raise_simd_outcome(outcome, core.state, operands);
}

}  // namespace

Handler select_simd_handler(const Instruction& in) {
  return is_simd_opcode(in.opcode) ? &simd_instruction : nullptr;
}

}  // namespace lamina::cpu::x86
