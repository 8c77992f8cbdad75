// Far JMP/CALL in real, protected and long mode: direct code-segment targets and call gates
// with their stack switch (SDM vol. 3A, 5.8; vol. 2, "CALL", "JMP"). The privilege and type
// checks are system/segment_checks; task gates and TSS targets go to the task switch.
#include "cpu/x86/core.h"
#include "cpu/x86/transfer_rollback.h"

namespace lamina::cpu::x86 {
namespace {

uint64_t mask_offset(uint64_t offset, uint8_t size) {
  return size == 2 ? offset & 0xffff : size == 4 ? offset & 0xffffffffu : offset;
}

bool real_addressing(const CpuState& state) { return !state.protected_mode() || state.virtual_8086(); }

}  // namespace

void CpuCore::check_code_offset(const SegmentCache& code, uint64_t offset) const {
  // A 64-bit target needs a canonical RIP; others must stay within CS's limit (#GP(0)).
  const bool long_target = state.long_mode_active() && code.long_mode();
  if (long_target ? !is_canonical(offset) : offset > code.limit)
    raise_fault(vector::kGeneralProtection, 0);
}

void CpuCore::push_return_address(uint16_t code_selector, uint64_t return_rip, uint8_t size) {
  push(code_selector, size);
  push(return_rip, size);
}

void CpuCore::far_jump(uint16_t selector, uint64_t offset, uint8_t operand_size) {
  if (real_addressing(state)) {
    offset = mask_offset(offset, operand_size);
    if (offset > state.segment[kCs].limit) raise_fault(vector::kGeneralProtection, 0);
    SegmentCache& code = state.segment[kCs];
    code.selector = selector;
    code.base = uint64_t{selector} << 4;
    state.rip = offset;
    update_mode();
    stop_block = true;
    return;
  }
  protected_far_transfer(FarTransfer::kJump, selector, offset, operand_size);
}

void CpuCore::far_call(uint16_t selector, uint64_t offset, uint8_t operand_size) {
  if (real_addressing(state)) {
    offset = mask_offset(offset, operand_size);
    if (offset > state.segment[kCs].limit) raise_fault(vector::kGeneralProtection, 0);
    TransferRollback rollback(*this);
    push_return_address(state.segment[kCs].selector, state.rip, operand_size);
    rollback.commit();
    far_jump(selector, offset, operand_size);
    return;
  }
  protected_far_transfer(FarTransfer::kCall, selector, offset, operand_size);
}

void CpuCore::protected_far_transfer(FarTransfer transfer, uint16_t selector, uint64_t offset,
                                     uint8_t operand_size) {
  const std::optional<uint64_t> descriptor = read_descriptor(selector);
  const FarTarget target = checked(
      check_far_transfer(transfer, selector, descriptor, state.cpl, state.long_mode_active()));
  switch (target.kind) {
    case FarTargetKind::kCodeSegment: {
      const SegmentCache code = segment_cache(target.code);
      const bool long_target = state.long_mode_active() && code.long_mode();
      offset = long_target ? offset : mask_offset(offset, operand_size);
      check_code_offset(code, offset);
      TransferRollback rollback(*this);
      if (transfer == FarTransfer::kCall)
        push_return_address(state.segment[kCs].selector, state.rip, operand_size);
      mark_accessed(selector, *descriptor);
      rollback.commit();
      set_code_segment(code, state.cpl);
      state.rip = offset;
      return;
    }
    case FarTargetKind::kCallGate: through_call_gate(transfer, selector, *descriptor); return;
    case FarTargetKind::kTaskGate:
    case FarTargetKind::kTss:
      far_task_switch(transfer, selector, target, *descriptor);
      return;
  }
}

// SDM 5.8.4-5.8.5: the gate names the code segment and entry point; CALL to a more privileged
// non-conforming segment switches to the inner stack from the TSS and copies the parameters.
void CpuCore::through_call_gate(FarTransfer transfer, uint16_t selector, uint64_t low) {
  const bool long_mode = state.long_mode_active();
  const uint32_t gate_error = selector & ~3u;
  // A 64-bit call gate is 16 bytes, all within the table (SDM 5.8.3.1).
  const std::optional<uint64_t> high = long_mode ? read_descriptor_high(selector) : uint64_t{0};
  if (!high) raise_fault(vector::kGeneralProtection, gate_error);
  const std::optional<GateDescriptor> gate = decode_gate(low, *high, long_mode);
  if (!gate) raise_fault(vector::kGeneralProtection, gate_error);
  const std::optional<uint64_t> code_descriptor = read_descriptor(gate->selector);
  const CallGateTarget target = checked(
      check_call_gate_target(transfer, gate->selector, code_descriptor, state.cpl, long_mode));
  const SegmentCache code = segment_cache(target.code);
  check_code_offset(code, gate->offset);
  const uint8_t push_size = gate->bits / 8;
  const uint16_t return_cs = state.segment[kCs].selector;
  const uint64_t return_rip = state.rip;
  TransferRollback rollback(*this);
  if (target.more_privileged) {
    const uint64_t old_rsp = state.gpr[kRsp];
    const uint16_t old_ss = state.segment[kSs].selector;
    const uint64_t old_stack_base = state.segment[kSs].base;
    const uint64_t old_mask = state.segment[kSs].default_big() ? 0xffffffffu : 0xffffu;
    const InnerStack stack = tss_inner_stack(target.new_cpl, 0);
    if (long_mode) {
      // IA-32e mode: SS becomes a null selector with RPL = the new CPL (SDM 5.8.5.1).
      state.segment[kSs] = SegmentCache{target.new_cpl, 0, 0xffffffff,
                                        static_cast<uint16_t>(0xc093 | (target.new_cpl << 5))};
      state.cpl = target.new_cpl;
      state.gpr[kRsp] = stack.pointer;
      update_mode();
    } else {
      const std::optional<uint64_t> stack_descriptor = read_descriptor(stack.selector);
      const LoadedSegment stack_segment = checked(
          check_inner_stack_segment(stack.selector, stack_descriptor, target.new_cpl, false));
      state.cpl = target.new_cpl;
      install_segment(kSs, stack_segment, stack_descriptor);
      set_stack_pointer(stack.pointer);
    }
    // The pushes to the new stack are supervisor accesses at the new CPL.
    push(old_ss, push_size);
    push(old_rsp, push_size);
    for (int i = gate->parameter_count - 1; i >= 0; --i) {
      const uint64_t address = old_stack_base + ((old_rsp + i * push_size) & old_mask);
      push(read_system(address, push_size), push_size);
    }
  }
  if (transfer == FarTransfer::kCall) push_return_address(return_cs, return_rip, push_size);
  mark_accessed(gate->selector, *code_descriptor);
  rollback.commit();
  set_code_segment(code, target.new_cpl);
  state.rip = gate->offset;
}

}  // namespace lamina::cpu::x86
