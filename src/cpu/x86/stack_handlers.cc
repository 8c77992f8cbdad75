// Stack instructions: PUSH/POP of registers, immediates, memory and segment registers,
// PUSHA/POPA, PUSHF/POPF with the IOPL and CPL rules (SDM vol. 2).
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"
#include "cpu/x86/system/virtual_8086.h"

namespace lamina::cpu::x86 {
namespace {

void push_register(CpuCore& core, const Instruction& in) {
  const uint8_t index = static_cast<uint8_t>((in.opcode_byte() & 7) | (in.rm & 8));
  core.push(core.read_register_sized(index, in.operand_size, true), in.operand_size);
}

void pop_register(CpuCore& core, const Instruction& in) {
  const uint8_t index = static_cast<uint8_t>((in.opcode_byte() & 7) | (in.rm & 8));
  core.write_register_sized(index, in.operand_size, true, core.pop(in.operand_size));
}

void push_immediate(CpuCore& core, const Instruction& in) { core.push(in.immediate, in.operand_size); }

void push_memory(CpuCore& core, const Instruction& in) {
  const uint64_t value = in.memory ? core.read_sized(in.segment, core.effective_address(in), in.operand_size)
                                   : core.read_register_sized(in.rm, in.operand_size, true);
  core.push(value, in.operand_size);
}

// POP r/m: the destination address is computed after RSP is incremented (SDM vol. 2, POP).
void pop_memory(CpuCore& core, const Instruction& in) {
  const uint64_t saved_rsp = core.state.gpr[kRsp];
  const uint64_t value = core.pop(in.operand_size);
  try {
    if (in.memory) {
      core.write_sized(in.segment, core.effective_address(in), in.operand_size, value);
    } else {
      core.write_register_sized(in.rm, in.operand_size, true, value);
    }
  } catch (const GuestFault&) {
    core.state.gpr[kRsp] = saved_rsp;
    throw;
  }
}

uint8_t segment_of(uint16_t opcode) {
  switch (opcode) {
    case 0x06: case 0x07: return kEs;
    case 0x0e: return kCs;
    case 0x16: case 0x17: return kSs;
    case 0x1e: case 0x1f: return kDs;
    case 0x1a0: case 0x1a1: return kFs;
    default: return kGs;
  }
}

void push_segment(CpuCore& core, const Instruction& in) {
  core.push(core.state.segment[segment_of(in.opcode)].selector, in.operand_size);
}

void pop_segment(CpuCore& core, const Instruction& in) {
  const uint8_t segment = segment_of(in.opcode);
  const uint64_t top = core.stack_pointer();
  const auto selector = static_cast<uint16_t>(core.read_sized(kSs, top, in.operand_size));
  core.load_segment(segment, selector);
  core.set_stack_pointer(top + in.operand_size);
  if (segment == kSs) {
    // Interrupts and debug exceptions wait for the next instruction (SDM 6.8.3).
    core.state.interrupt_shadow = true;
    core.state.debug_shadow = true;
    core.stop_block = true;
  }
}

void push_all(CpuCore& core, const Instruction& in) {
  const uint64_t saved_rsp = core.state.gpr[kRsp];
  const uint64_t original_sp = core.read_register_sized(kRsp, in.operand_size, false);
  try {
    for (uint8_t index = kRax; index <= kRdi; ++index) {
      const uint64_t value = index == kRsp ? original_sp : core.read_register_sized(index, in.operand_size, false);
      core.push(value, in.operand_size);
    }
  } catch (const GuestFault&) {
    core.state.gpr[kRsp] = saved_rsp;
    throw;
  }
}

void pop_all(CpuCore& core, const Instruction& in) {
  const uint64_t top = core.stack_pointer();
  uint64_t values[8];
  for (int i = 0; i < 8; ++i) values[i] = core.read_sized(kSs, top + i * in.operand_size, in.operand_size);
  for (int i = 0; i < 8; ++i) {
    const uint8_t index = static_cast<uint8_t>(kRdi - i);
    if (index != kRsp) core.write_register_sized(index, in.operand_size, false, values[i]);
  }
  core.set_stack_pointer(top + 8 * in.operand_size);
}

void push_flags(CpuCore& core, const Instruction& in) {
  if (virtual_8086_sensitive_fault(core.state.virtual_8086(), core.state.iopl()))
    raise_fault(vector::kGeneralProtection, 0);
  // The image pushed has VM and RF clear (SDM vol. 2, PUSHF).
  core.push(core.read_rflags() & ~(rflags::kVm | rflags::kRf), in.operand_size);
}

void pop_flags(CpuCore& core, const Instruction& in) {
  CpuState& state = core.state;
  const uint8_t iopl = state.iopl();
  if (virtual_8086_sensitive_fault(state.virtual_8086(), iopl))
    raise_fault(vector::kGeneralProtection, 0);
  const uint64_t value = core.pop(in.operand_size);
  uint64_t changeable = rflags::kArithmetic | rflags::kTf | rflags::kDf | rflags::kNt;
  if (in.operand_size != 2) changeable |= rflags::kAc | rflags::kId;
  const bool real = !state.protected_mode();
  if (real || state.cpl == 0) changeable |= rflags::kIopl;
  if (real || state.cpl <= iopl) changeable |= rflags::kIf;
  if (in.operand_size == 2) changeable &= 0xffff;
  const uint64_t current = core.read_rflags();
  state.write_rflags((current & ~changeable) | (value & changeable));
  core.update_alignment_check();
  core.interrupt_window_may_open();
  core.stop_block = true;  // IF may have opened an interrupt window; TF starts single steps
}

}  // namespace

Handler select_stack_handler(const Instruction& in) {
  const uint16_t op = in.opcode;
  if (op >= 0x50 && op <= 0x57) return &push_register;
  if (op >= 0x58 && op <= 0x5f) return &pop_register;
  switch (op) {
    case 0x68: case 0x6a: return &push_immediate;
    case 0x8f: return &pop_memory;
    case 0xff: return in.group_index() == 6 ? &push_memory : nullptr;
    case 0x06: case 0x0e: case 0x16: case 0x1e: case 0x1a0: case 0x1a8: return &push_segment;
    case 0x07: case 0x17: case 0x1f: case 0x1a1: case 0x1a9: return &pop_segment;
    case 0x60: return &push_all;
    case 0x61: return &pop_all;
    case 0x9c: return &push_flags;
    case 0x9d: return &pop_flags;
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
