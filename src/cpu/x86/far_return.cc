// Far RET and IRET/IRETD/IRETQ in real, protected and long mode, including returns to an outer
// privilege level (SDM vol. 2, "RET", "IRET"; vol. 3A 5.8.6). Both end in complete_return: the
// code and stack segment rules are system/segment_checks'.
#include <array>

#include "cpu/x86/core.h"
#include "cpu/x86/system/virtual_8086.h"

namespace lamina::cpu::x86 {

void CpuCore::far_return(uint8_t operand_size, uint16_t release_bytes) {
  const uint64_t top = stack_pointer();
  const uint64_t offset = read_sized(kSs, top, operand_size);
  const auto selector = static_cast<uint16_t>(read_sized(kSs, top + operand_size, operand_size));
  if (!state.protected_mode() || state.virtual_8086()) {
    if (offset > state.segment[kCs].limit) raise_fault(vector::kGeneralProtection, 0);
    SegmentCache& code = state.segment[kCs];
    code.selector = selector;
    code.base = uint64_t{selector} << 4;
    state.rip = offset;
    set_stack_pointer(top + 2 * operand_size + release_bytes);
    update_mode();
    stop_block = true;
    return;
  }
  // To an outer level, SS:SP follow the parameters being released.
  complete_return(selector, offset, operand_size, top + 2 * operand_size + release_bytes,
                  release_bytes, false);
}

void CpuCore::complete_return(uint16_t selector, uint64_t offset, uint8_t operand_size,
                              uint64_t stack_slot, uint16_t release_bytes, bool always_pop_stack) {
  const std::optional<uint64_t> code_descriptor = read_descriptor(selector);
  const ReturnTarget target = checked(check_return_code_segment(
      selector, code_descriptor, state.cpl, state.long_mode_active()));
  const SegmentCache code = segment_cache(target.code);
  check_code_offset(code, offset);
  if (!target.outer && !always_pop_stack) {
    mark_accessed(selector, *code_descriptor);
    set_stack_pointer(stack_slot);
    set_code_segment(code, target.new_cpl);
    state.rip = offset;
    return;
  }
  const uint64_t new_sp = read_sized(kSs, stack_slot, operand_size);
  const auto new_ss =
      static_cast<uint16_t>(read_sized(kSs, stack_slot + operand_size, operand_size));
  const std::optional<uint64_t> stack_descriptor = read_descriptor(new_ss);
  const bool to_mode_64 = state.long_mode_active() && code.long_mode();
  const LoadedSegment stack = checked(
      check_return_stack_segment(new_ss, stack_descriptor, target.new_cpl, to_mode_64));
  mark_accessed(selector, *code_descriptor);
  set_code_segment(code, target.new_cpl);
  install_segment(kSs, stack, stack_descriptor);
  // The stack-address size is now the new SS's (or 64-bit), as RET/IRET's pseudo code says.
  if (operand_size == 8 || code_mode == CodeMode::k64) {
    state.gpr[kRsp] = new_sp + release_bytes;
  } else {
    set_stack_pointer(new_sp + release_bytes);
  }
  state.rip = offset;
  if (!target.outer) return;
  // Data segments the outer level may not use become null (RET: "FOR each SegReg in (ES, FS,
  // GS, and DS)").
  for (uint8_t segment : {kEs, kDs, kFs, kGs}) {
    if (!must_null_after_return(loaded_segment(state.segment[segment]), target.new_cpl)) continue;
    state.segment[segment].selector = 0;
    state.segment[segment].attributes = 0;
  }
  update_mode();
}

void CpuCore::interrupt_return(uint8_t operand_size) {
  state.nmi_blocked = false;  // IRET ends NMI blocking even if it then faults (SDM 6.7.1)
  const uint64_t top = stack_pointer();
  const uint64_t offset = read_sized(kSs, top, operand_size);
  const auto selector = static_cast<uint16_t>(read_sized(kSs, top + operand_size, operand_size));
  const uint64_t flags = read_sized(kSs, top + 2 * operand_size, operand_size);
  const uint64_t current = read_rflags();
  const uint8_t iopl = (current & rflags::kIopl) >> 12;

  uint64_t changeable = rflags::kArithmetic | rflags::kTf | rflags::kDf | rflags::kNt |
                        rflags::kIf | rflags::kIopl;
  // RF from the image masks the next instruction's breakpoint and clears when that
  // instruction starts (SDM 17.3.1.1; the run loop's checked path).
  if (operand_size != 2) changeable |= rflags::kAc | rflags::kId | rflags::kRf;

  if (!state.protected_mode() || state.virtual_8086()) {
    // Virtual-8086 mode: IRET is IOPL-sensitive, and with IOPL = 3 it works as in real mode
    // but cannot change IOPL (or VM, VIF, VIP, which are not in `changeable`).
    if (virtual_8086_sensitive_fault(state.virtual_8086(), iopl))
      raise_fault(vector::kGeneralProtection, 0);
    if (state.virtual_8086()) changeable &= ~rflags::kIopl;
    if (offset > state.segment[kCs].limit) raise_fault(vector::kGeneralProtection, 0);
    SegmentCache& code = state.segment[kCs];
    code.selector = selector;
    code.base = uint64_t{selector} << 4;
    state.rip = offset;
    set_stack_pointer(top + 3 * operand_size);
    if (operand_size == 2) changeable &= 0xffff;
    state.write_rflags((current & ~changeable) | (flags & changeable));
    update_mode();
    interrupt_window_may_open();
    stop_block = true;
    return;
  }
  if (current & rflags::kNt) {
    // IA-32e mode has no task switches (SDM vol. 2, IRET: #GP(0)).
    if (state.long_mode_active()) raise_fault(vector::kGeneralProtection, 0);
    return_to_previous_task();
    return;
  }
  if ((flags & rflags::kVm) && state.cpl == 0 && operand_size == 4 && !state.long_mode_active()) {
    return_to_virtual_8086(top);
    return;
  }

  // IOPL changes only at CPL 0, IF only at CPL <= IOPL (SDM vol. 2, IRET).
  if (state.cpl != 0) changeable &= ~rflags::kIopl;
  if (state.cpl > iopl) changeable &= ~rflags::kIf;
  if (state.cpl == 0) changeable |= operand_size != 2 ? (rflags::kVif | rflags::kVip) : 0;
  if (operand_size == 2) changeable &= 0xffff;
  const uint64_t new_flags = (current & ~changeable) | (flags & changeable);

  // 64-bit mode always pops SS:RSP; other modes only when the privilege level changes.
  complete_return(selector, offset, operand_size, top + 3 * operand_size, 0,
                  code_mode == CodeMode::k64);
  state.write_rflags(new_flags);
  update_alignment_check();
  interrupt_window_may_open();
}

// SDM vol. 2 IRET, RETURN-TO-VIRTUAL-8086-MODE: from CPL 0 with VM in the EFLAGS image, IRET
// pops EIP, CS, EFLAGS, ESP, SS, ES, DS, FS and GS and resumes at CPL 3 in virtual-8086 mode.
void CpuCore::return_to_virtual_8086(uint64_t top) {
  std::array<uint32_t, 9> popped{};
  for (size_t i = 0; i < popped.size(); ++i)
    popped[i] = static_cast<uint32_t>(read_sized(kSs, top + 4 * i, 4));
  const Virtual8086Return next = checked(decode_virtual_8086_return(popped));
  // From CPL 0 every flag of the image loads, IOPL and VM included.
  state.write_rflags(next.eflags);
  interrupt_window_may_open();
  for (size_t i = 0; i < next.segments.size(); ++i) {
    state.segment[i] = SegmentCache{next.segments[i], virtual_8086_segment_base(next.segments[i]),
                                    kVirtual8086SegmentLimit, 0xf3};
  }
  state.gpr[kRsp] = next.esp;
  state.rip = next.eip;
  state.cpl = 3;
  update_mode();
  update_alignment_check();
  stop_block = true;
}

}  // namespace lamina::cpu::x86
