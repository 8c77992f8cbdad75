// Debug exceptions on the core (Intel SDM vol. 3B, 17.2-17.3; AMD APM vol. 2, 13.1): the run
// loop's checked path for single step (TF), instruction breakpoints (faults, masked by RF),
// data and I/O breakpoints (traps after the instruction), the #DB traps a MOV SS or POP SS
// holds for one instruction (SDM 6.8.3), and the decoded breakpoint and alignment-check
// flags the hot path tests.
#include "cpu/x86/core.h"
#include "cpu/x86/cpu.h"

namespace lamina::cpu::x86 {

void CpuCore::update_breakpoints() {
  breakpoints = decode_breakpoints(state.dr, (state.cr4 & cr4::kDe) != 0);
  breakpoints_armed = breakpoints.any();
  // Pages cached before must now reach the slow path, which matches the breakpoints.
  if (breakpoints.data_mask != 0) tlb.trap_data(false);
}

void CpuCore::update_alignment_check() {
  const bool armed = (state.cr0 & cr0::kAm) && (state.rflags & rflags::kAc) && state.cpl == 3;
  if (armed && !alignment_check) tlb.trap_data(true);
  alignment_check = armed;
}

bool Cpu::begin_checked_step(const Block& block, bool shadow, CpuExit& exit) {
  CpuCore& core = *core_;
  CheckedStep& step = checked_step_;
  CpuState& state = core.state;
  step.held = state.debug_shadow;
  state.debug_shadow = false;
  if (!step.held) state.pending_debug = 0;
  // Hits belong to the instruction that made them; none carry over from before this step.
  core.debug_hits = 0;
  step.single_step = (state.rflags & rflags::kTf) != 0;
  const bool resume = (state.rflags & rflags::kRf) != 0;
  // SDM 17.3.1.1: RF is cleared at the start of the instruction, after the instruction
  // breakpoint check it masked; a fault in the instruction pushes RF = 1 again.
  state.rflags &= ~rflags::kRf;
  const BreakpointSet& breakpoints = core.breakpoints;
  // The instruction right after MOV SS/POP SS has its debug exceptions inhibited.
  if (breakpoints.instruction_mask != 0 && !resume && !step.held) {
    const uint8_t hits = match_instruction(breakpoints, core.code_linear(state.rip));
    if (hits != 0) {
      ++core.retired;  // a breakpoint loop must still end run()
      step.count = 0;
      return raise_instruction_breakpoint(hits, exit);
    }
  }
  const std::vector<Instruction>& instructions = block.instructions;
  step.count = instructions.size();
  if (shadow || step.single_step) {
    step.count = 1;
  } else if (breakpoints.instruction_mask != 0) {
    // Run up to the next instruction with a breakpoint; it starts the next step.
    uint64_t rip = state.rip + instructions[0].length;
    for (size_t index = 1; index < instructions.size(); ++index) {
      if (match_instruction(breakpoints, core.code_linear(rip)) != 0) {
        step.count = index;
        break;
      }
      rip += instructions[index].length;
    }
  }
  return true;
}

uint8_t Cpu::due_instruction_breakpoints() const {
  const CpuCore& core = *core_;
  const CpuState& state = core.state;
  if (core.breakpoints.instruction_mask == 0 || (state.rflags & rflags::kRf) ||
      (state.interrupt_shadow && state.debug_shadow))
    return 0;
  return match_instruction(core.breakpoints, core.code_linear(state.rip));
}

bool Cpu::raise_instruction_breakpoint(uint8_t hits, CpuExit& exit) {
  CpuState& state = core_->state;
  // An instruction breakpoint is a fault taken before the instruction; the image pushed keeps
  // RF as it is (0 here), so the handler sets RF to resume (SDM 17.3.1.1).
  state.dr[6] = (state.dr[6] & ~dr6::kBreakpointHits) | hits;
  core_->instruction_rip = state.rip;
  return deliver_event(vector::kDebug, false, 0, true, false, exit);
}

bool Cpu::finish_checked_step(CpuExit& exit) {
  CpuCore& core = *core_;
  const CheckedStep& step = checked_step_;
  CpuState& state = core.state;
  uint64_t bits = core.debug_hits;
  core.debug_hits = 0;
  // INT n, INT3, INTO and INT1 clear TF on delivery and report no single step of their own.
  if (step.single_step && !core.event_delivered) bits |= dr6::kBs;
  if (state.debug_shadow) {
    // This instruction loaded SS: its traps wait until after the next one.
    state.pending_debug = static_cast<uint16_t>(state.pending_debug | bits);
    return true;
  }
  if (step.held) {
    bits |= state.pending_debug;
    state.pending_debug = 0;
  }
  if (bits == 0) return true;
  // B0-B3 report this exception's breakpoints; BD, BS and BT stay set until software clears
  // them (SDM 17.2.3).
  state.dr[6] = (state.dr[6] & ~dr6::kBreakpointHits) | bits;
  state.interrupt_shadow = false;
  core.instruction_rip = state.rip;
  return deliver_event(vector::kDebug, false, 0, true, false, exit);
}

}  // namespace lamina::cpu::x86
