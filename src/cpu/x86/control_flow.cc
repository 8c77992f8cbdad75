// Near and far control transfer: Jcc, JMP, CALL, RET, LOOP/LOOPcc/JrCXZ, far JMP/CALL/RET,
// INT n/INT3/INTO/INT1, IRET, ENTER/LEAVE (SDM vol. 2).
#include <array>
#include <utility>

#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"
#include "cpu/x86/system/virtual_8086.h"

namespace lamina::cpu::x86 {
namespace {

// One handler per condition so the condition's flag logic is resolved at compile time.
template <uint8_t kCondition>
void jump_conditional(CpuCore& core, const Instruction& in) {
  if (core.state.flags.condition(kCondition)) branch_to(core, core.state.rip + in.immediate, in.operand_size);
}

// A Jcc its block runs on past (cpu.cc translate_block): taken, it ends the block there
// through stop_block, which the run loop tests after every instruction anyway (a test of RIP
// per instruction cost the interpreter ~15%); side_exit tells the run loop that the block
// may still be chained from.
template <uint8_t kCondition>
void jump_conditional_side_exit(CpuCore& core, const Instruction& in) {
  if (core.state.flags.condition(kCondition)) {
    branch_to(core, core.state.rip + in.immediate, in.operand_size);
    core.stop_block = true;
    core.side_exit = true;
  }
}

template <uint8_t... kConditions>
constexpr std::array<Handler, 16> make_jump_table(std::integer_sequence<uint8_t, kConditions...>) {
  return {&jump_conditional<kConditions>...};
}
constexpr std::array<Handler, 16> kJumpConditional =
    make_jump_table(std::make_integer_sequence<uint8_t, 16>{});

template <uint8_t... kConditions>
constexpr std::array<Handler, 16> make_side_exit_table(std::integer_sequence<uint8_t, kConditions...>) {
  return {&jump_conditional_side_exit<kConditions>...};
}
constexpr std::array<Handler, 16> kJumpConditionalSideExit =
    make_side_exit_table(std::make_integer_sequence<uint8_t, 16>{});

void jump_relative(CpuCore& core, const Instruction& in) {
  branch_to(core, core.state.rip + in.immediate, in.operand_size);
}

void call_relative(CpuCore& core, const Instruction& in) {
  const uint64_t target = checked_target(core, core.state.rip + in.immediate, in.operand_size);
  core.push(core.state.rip, in.operand_size);
  core.state.rip = target;
}

void jump_indirect(CpuCore& core, const Instruction& in) {
  const uint64_t target = in.operand_size == 2 ? read_rm<uint16_t>(core, in)
                          : in.operand_size == 4 ? read_rm<uint32_t>(core, in)
                                                 : read_rm<uint64_t>(core, in);
  branch_to(core, target, in.operand_size);
}

void call_indirect(CpuCore& core, const Instruction& in) {
  const uint64_t raw = in.operand_size == 2 ? read_rm<uint16_t>(core, in)
                       : in.operand_size == 4 ? read_rm<uint32_t>(core, in)
                                              : read_rm<uint64_t>(core, in);
  const uint64_t target = checked_target(core, raw, in.operand_size);
  core.push(core.state.rip, in.operand_size);
  core.state.rip = target;
}

void return_near(CpuCore& core, const Instruction& in) {
  if (core.code_mode == CodeMode::k64 && in.immediate == 0) {
    const uint64_t target = core.read<uint64_t>(kSs, core.state.gpr[kRsp]);
    core.state.rip = checked_target(core, target, 8);
    core.state.gpr[kRsp] += 8;
    return;
  }
  const uint64_t top = core.stack_pointer();
  const uint64_t target = checked_target(core, core.read_sized(kSs, top, in.operand_size), in.operand_size);
  core.set_stack_pointer(top + in.operand_size + (in.immediate & 0xffff));
  core.state.rip = target;
}

// E0-E3: LOOPNE, LOOPE, LOOP, JrCXZ; the counter is CX/ECX/RCX by address size.
void loop(CpuCore& core, const Instruction& in) {
  const uint64_t mask = in.address_size == 8 ? ~uint64_t{0} : in.address_size == 4 ? 0xffffffffu : 0xffffu;
  uint64_t count = core.state.gpr[kRcx] & mask;
  bool taken = false;
  if (in.opcode == 0xe3) {
    taken = count == 0;
  } else {
    count = (count - 1) & mask;
    core.write_register_sized(kRcx, in.address_size, false, count);
    taken = count != 0;
    if (in.opcode == 0xe0) taken = taken && !core.state.flags.zf();
    if (in.opcode == 0xe1) taken = taken && core.state.flags.zf();
  }
  if (taken) branch_to(core, core.state.rip + in.immediate, in.operand_size);
}

void jump_far_immediate(CpuCore& core, const Instruction& in) {
  core.far_jump(in.immediate2, in.immediate, in.operand_size);
}
void call_far_immediate(CpuCore& core, const Instruction& in) {
  core.far_call(in.immediate2, in.immediate, in.operand_size);
}

// FF /3 and FF /5: the far pointer is offset then selector in memory.
void far_indirect(CpuCore& core, const Instruction& in) {
  const uint64_t address = core.effective_address(in);
  const uint64_t offset = core.read_sized(in.segment, address, in.operand_size);
  const uint16_t selector = core.read<uint16_t>(in.segment, address + in.operand_size);
  if (in.group_index() == 3) {
    core.far_call(selector, offset, in.operand_size);
  } else {
    core.far_jump(selector, offset, in.operand_size);
  }
}

void return_far(CpuCore& core, const Instruction& in) {
  core.far_return(in.operand_size, in.opcode == 0xca ? static_cast<uint16_t>(in.immediate) : 0);
}

void interrupt_immediate(CpuCore& core, const Instruction& in) {
  // INT n is IOPL-sensitive in virtual-8086 mode (no VME): #GP(0) to the monitor.
  if (virtual_8086_sensitive_fault(core.state.virtual_8086(), core.state.iopl()))
    raise_fault(vector::kGeneralProtection, 0);
  core.deliver(static_cast<uint8_t>(in.immediate), false, 0, true, false);
}
void breakpoint(CpuCore& core, const Instruction&) { core.deliver(vector::kBreakpoint, false, 0, true, false); }
void interrupt_on_overflow(CpuCore& core, const Instruction&) {
  if (core.state.flags.of()) core.deliver(vector::kOverflow, false, 0, true, false);
}
// INT1 (ICEBP) delivers #DB like a hardware event: no gate DPL check, EXT in nested faults.
void debug_trap(CpuCore& core, const Instruction&) { core.deliver(vector::kDebug, false, 0, false, true); }

void interrupt_return(CpuCore& core, const Instruction& in) { core.interrupt_return(in.operand_size); }

// ENTER imm16, imm8 (SDM vol. 2, ENTER: the nesting level is taken modulo 32).
void enter(CpuCore& core, const Instruction& in) {
  const uint8_t size = in.operand_size;
  const uint8_t level = in.immediate2 & 31;
  const uint8_t stack_size = core.stack_address_size();
  const uint64_t stack_mask = stack_size == 8 ? ~uint64_t{0} : stack_size == 4 ? 0xffffffffu : 0xffffu;
  const uint64_t saved_rsp = core.state.gpr[kRsp];
  try {
    core.push(core.state.gpr[kRbp], size);
    const uint64_t frame = core.stack_pointer();
    uint64_t rbp = core.state.gpr[kRbp];
    for (uint8_t i = 1; i < level; ++i) {
      rbp = (rbp - size) & stack_mask;
      core.push(core.read_sized(kSs, rbp, size), size);
    }
    if (level > 0) core.push(frame, size);
    const uint64_t new_top = (core.stack_pointer() - (in.immediate & 0xffff)) & stack_mask;
    // The new stack top must be writable (the SDM checks it before committing).
    (void)core.linear_address(kSs, new_top, 1, Access::kWrite);
    core.write_register_sized(kRbp, size, false, frame);
    core.set_stack_pointer(new_top);
  } catch (const GuestFault&) {
    core.state.gpr[kRsp] = saved_rsp;
    throw;
  }
}

void leave(CpuCore& core, const Instruction& in) {
  const uint64_t saved_rsp = core.state.gpr[kRsp];
  core.set_stack_pointer(core.state.gpr[kRbp]);
  try {
    core.write_register_sized(kRbp, in.operand_size, false, core.pop(in.operand_size));
  } catch (const GuestFault&) {
    core.state.gpr[kRsp] = saved_rsp;
    throw;
  }
}

}  // namespace

Handler select_side_exit_handler(const Instruction& in) { return kJumpConditionalSideExit[in.opcode & 0xf]; }

Handler select_control_handler(const Instruction& in) {
  const uint16_t op = in.opcode;
  if ((op >= 0x70 && op <= 0x7f) || (op >= 0x180 && op <= 0x18f)) return kJumpConditional[op & 0xf];
  switch (op) {
    case 0xe9: case 0xeb: return &jump_relative;
    case 0xe8: return &call_relative;
    case 0xc2: case 0xc3: return &return_near;
    case 0xe0: case 0xe1: case 0xe2: case 0xe3: return &loop;
    case 0xea: return &jump_far_immediate;
    case 0x9a: return &call_far_immediate;
    case 0xca: case 0xcb: return &return_far;
    case 0xcc: return &breakpoint;
    case 0xcd: return &interrupt_immediate;
    case 0xce: return &interrupt_on_overflow;
    case 0xf1: return &debug_trap;
    case 0xcf: return &interrupt_return;
    case 0xc8: return &enter;
    case 0xc9: return &leave;
    case 0xff:
      switch (in.group_index()) {
        case 2: return &call_indirect;
        case 4: return &jump_indirect;
        case 3: case 5: return &far_indirect;
        default: return nullptr;
      }
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
