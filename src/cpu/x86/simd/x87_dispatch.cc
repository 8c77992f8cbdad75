// Routes the x87 escapes D8-DF and FWAIT: device-not-available and pending-exception checks,
// the instruction families, and the last-instruction pointers (SDM Vol. 1 8.1.8, 8.7; Vol. 3
// 2.5 CR0.EM/TS/MP/NE).

#include "cpu/x86/simd/x87_stack.h"

namespace lamina::cpu::x86::simd {
namespace {

enum class Family : uint8_t { kInvalid, kArithmetic, kLoadStore, kD9Register, kControl };

struct Route {
  Family family = Family::kInvalid;
  bool control = false;      // a control instruction: leaves FIP/FDP/FOP alone
  bool non_waiting = false;  // does not check for a pending unmasked exception
};

Route route(const SimdInstruction& instruction) {
  uint8_t escape = instruction.opcode;
  uint8_t modrm = instruction.modrm;
  unsigned reg = (modrm >> 3) & 7;
  bool memory = instruction.memory_operand;
  switch (escape) {
    case 0xd8:
    case 0xdc: return {Family::kArithmetic};
    case 0xd9:
      if (memory) {
        if (reg == 0 || reg == 2 || reg == 3) return {Family::kLoadStore};
        if (reg == 1) return {};
        return {Family::kControl, true, reg == 6 || reg == 7};
      }
      if (reg == 0 || reg == 3) return {Family::kLoadStore};
      if (reg == 1) return {Family::kControl};
      if (reg == 2) return modrm == 0xd0 ? Route{Family::kD9Register} : Route{};
      return {Family::kD9Register};
    case 0xda:
      if (memory) return {Family::kArithmetic};
      if (reg < 4) return {Family::kControl};
      return modrm == 0xe9 ? Route{Family::kArithmetic} : Route{};
    case 0xdb:
      if (memory) return (reg == 4 || reg == 6) ? Route{} : Route{Family::kLoadStore};
      if (reg < 4) return {Family::kControl};
      if (reg == 5 || reg == 6) return {Family::kArithmetic};
      if (modrm >= 0xe0 && modrm <= 0xe4) return {Family::kControl, true, true};
      return {};
    case 0xdd:
      if (memory) {
        if (reg < 4) return {Family::kLoadStore};
        if (reg == 5) return {};
        return {Family::kControl, true, reg != 4};
      }
      if (reg < 2) return {Family::kControl};
      if (reg < 4) return {Family::kLoadStore};
      if (reg < 6) return {Family::kArithmetic};
      return {};
    case 0xde:
      if (!memory && reg == 3 && modrm != 0xd9) return {};
      return {Family::kArithmetic};
    default:  // 0xdf
      if (memory) return {Family::kLoadStore};
      if (reg < 2) return {Family::kControl};
      if (reg < 4) return {Family::kLoadStore};
      if (reg == 4) return modrm == 0xe0 ? Route{Family::kControl, true, true} : Route{};
      if (reg < 7) return {Family::kArithmetic};
      return {};
  }
}

}  // namespace

SimdOutcome execute_x87(Context& context) {
  const SimdControl& control = context.control;
  const SimdInstruction& instruction = context.instruction;
  SimdState& state = context.state;
  // SDM Vol. 3 2.5: an ESC instruction with CR0.EM or CR0.TS set raises #NM.
  if (control.cr0_em || control.cr0_ts) return SimdOutcome::kDeviceNotAvailable;
  Route selected = route(instruction);
  if (selected.family == Family::kInvalid) return SimdOutcome::kInvalidOpcode;
  // A waiting instruction with an unmasked exception pending raises #MF first (SDM Vol. 1
  // 8.7). With CR0.NE=0 the PC's FERR#/IGNNE# path is not modeled: execution continues.
  if (!selected.non_waiting && (state.status & kX87ErrorSummary) && control.cr0_ne) {
    return SimdOutcome::kFloatingPointError;
  }
  SimdOutcome outcome = SimdOutcome::kInvalidOpcode;
  switch (selected.family) {
    case Family::kArithmetic: outcome = x87_arithmetic(context); break;
    case Family::kLoadStore: outcome = x87_load_store(context); break;
    case Family::kD9Register: outcome = x87_d9_register(context); break;
    case Family::kControl: outcome = x87_control(context); break;
    case Family::kInvalid: break;
  }
  if (outcome == SimdOutcome::kDone && !selected.control) {
    state.last_instruction = context.operands.instruction_address();
    state.last_opcode = static_cast<uint16_t>(((instruction.opcode & 7) << 8) | instruction.modrm);
    if (instruction.memory_operand) state.last_data = context.operands.effective_address();
  }
  return outcome;
}

SimdOutcome execute_fwait(Context& context) {
  // SDM Vol. 2 WAIT/FWAIT: #NM when CR0.MP and CR0.TS are both set.
  if (context.control.cr0_mp && context.control.cr0_ts) return SimdOutcome::kDeviceNotAvailable;
  if ((context.state.status & kX87ErrorSummary) && context.control.cr0_ne) {
    return SimdOutcome::kFloatingPointError;
  }
  return SimdOutcome::kDone;
}

}  // namespace lamina::cpu::x86::simd
