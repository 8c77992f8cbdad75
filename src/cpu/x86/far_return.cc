// Far RET and IRET/IRETD/IRETQ in real, protected and long mode, including returns to an
// outer privilege level (SDM vol. 2, "RET", "IRET"; vol. 3A 5.8.6). Returns to virtual-8086
// mode and task returns (NT=1) are not supported and raise #GP(0).
#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {
namespace {

// After a return to an outer level, data segments the new CPL may not use become null
// (SDM vol. 2, RET: "FOR each SegReg in (ES, FS, GS, and DS)").
void drop_inaccessible_segments(CpuCore& core) {
  for (uint8_t segment : {kEs, kDs, kFs, kGs}) {
    SegmentCache& cache = core.state.segment[segment];
    const bool conforming_code = (cache.type() & 0xc) == 0xc;
    if (cache.code_or_data() && !conforming_code && cache.dpl() < core.state.cpl) {
      cache.selector = 0;
      cache.attributes = 0;
    }
  }
  core.update_mode();
}

// The code segment a far return or IRET lands in, checked against the return RPL.
SegmentCache return_code_segment(CpuCore& core, uint16_t selector) {
  const uint32_t error = selector & ~3u;
  if (error == 0) raise_fault(vector::kGeneralProtection, 0);
  const SegmentCache cache = CpuCore::make_cache(selector, core.read_descriptor(selector));
  const uint8_t rpl = selector & 3;
  if (!cache.code_or_data() || !(cache.type() & 8) || rpl < core.state.cpl)
    raise_fault(vector::kGeneralProtection, error);
  const bool conforming = cache.type() & 4;
  if (conforming ? cache.dpl() > rpl : cache.dpl() != rpl) raise_fault(vector::kGeneralProtection, error);
  if (!cache.present()) raise_fault(vector::kSegmentNotPresent, error);
  return cache;
}

}  // namespace

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
  const SegmentCache code = return_code_segment(*this, selector);
  const uint8_t rpl = selector & 3;
  const bool long_target = state.long_mode_active() && code.long_mode();
  if (long_target ? static_cast<uint64_t>(static_cast<int64_t>(offset << 16) >> 16) != offset
                  : offset > code.limit)
    raise_fault(vector::kGeneralProtection, 0);
  if (rpl == state.cpl) {
    set_stack_pointer(top + 2 * operand_size + release_bytes);
    set_code_segment(code, rpl);
    state.rip = offset;
    return;
  }
  // Outer level: SS:SP follow the parameters being released.
  const uint64_t stack_slot = top + 2 * operand_size + release_bytes;
  const uint64_t new_sp = read_sized(kSs, stack_slot, operand_size);
  const auto new_ss = static_cast<uint16_t>(read_sized(kSs, stack_slot + operand_size, operand_size));
  const SegmentCache saved_cs = state.segment[kCs];
  const SegmentCache saved_ss = state.segment[kSs];
  const uint8_t saved_cpl = state.cpl;
  try {
    set_code_segment(code, rpl);
    load_segment(kSs, new_ss);
  } catch (const GuestFault&) {
    state.segment[kCs] = saved_cs;
    state.segment[kSs] = saved_ss;
    state.cpl = saved_cpl;
    update_mode();
    throw;
  }
  state.gpr[kRsp] = operand_size == 8 ? new_sp + release_bytes : (new_sp + release_bytes) & 0xffffffffu;
  if (operand_size == 2) state.gpr[kRsp] &= 0xffff;
  state.rip = offset;
  drop_inaccessible_segments(*this);
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

  if (!state.protected_mode()) {
    if (offset > state.segment[kCs].limit) raise_fault(vector::kGeneralProtection, 0);
    SegmentCache& code = state.segment[kCs];
    code.selector = selector;
    code.base = uint64_t{selector} << 4;
    state.rip = offset;
    set_stack_pointer(top + 3 * operand_size);
    if (operand_size == 2) changeable &= 0xffff;
    state.write_rflags((current & ~changeable) | (flags & changeable));
    update_mode();
    stop_block = true;
    return;
  }
  if (state.virtual_8086()) raise_fault(vector::kGeneralProtection, 0);
  if (!state.long_mode_active() && (current & rflags::kNt)) raise_fault(vector::kGeneralProtection, 0);
  if ((flags & rflags::kVm) && state.cpl == 0 && operand_size == 4 && !state.long_mode_active())
    raise_fault(vector::kGeneralProtection, 0);  // return to virtual-8086 mode: not supported

  const SegmentCache code = return_code_segment(*this, selector);
  const uint8_t rpl = selector & 3;
  const bool long_target = state.long_mode_active() && code.long_mode();
  if (long_target ? static_cast<uint64_t>(static_cast<int64_t>(offset << 16) >> 16) != offset
                  : offset > code.limit)
    raise_fault(vector::kGeneralProtection, 0);

  // IOPL changes only at CPL 0, IF only at CPL <= IOPL (SDM vol. 2, IRET).
  if (state.cpl != 0) changeable &= ~rflags::kIopl;
  if (state.cpl > iopl) changeable &= ~rflags::kIf;
  if (state.cpl == 0) changeable |= operand_size != 2 ? (rflags::kVif | rflags::kVip) : 0;
  if (operand_size == 2) changeable &= 0xffff;
  const uint64_t new_flags = (current & ~changeable) | (flags & changeable);

  // 64-bit mode always pops SS:RSP; other modes only when the privilege level changes.
  const bool pop_stack = code_mode == CodeMode::k64 || rpl != state.cpl;
  if (!pop_stack) {
    set_stack_pointer(top + 3 * operand_size);
    set_code_segment(code, rpl);
    state.rip = offset;
    state.write_rflags(new_flags);
    update_alignment_check();
    return;
  }
  const uint64_t new_sp = read_sized(kSs, top + 3 * operand_size, operand_size);
  const auto new_ss = static_cast<uint16_t>(read_sized(kSs, top + 4 * operand_size, operand_size));
  const SegmentCache saved_cs = state.segment[kCs];
  const SegmentCache saved_ss = state.segment[kSs];
  const uint8_t saved_cpl = state.cpl;
  const bool outer = rpl != state.cpl;
  try {
    set_code_segment(code, rpl);
    load_segment(kSs, new_ss);
  } catch (const GuestFault&) {
    state.segment[kCs] = saved_cs;
    state.segment[kSs] = saved_ss;
    state.cpl = saved_cpl;
    update_mode();
    throw;
  }
  if (operand_size == 8) {
    state.gpr[kRsp] = new_sp;
  } else if (operand_size == 4) {
    state.gpr[kRsp] = new_sp & 0xffffffffu;
  } else {
    state.gpr[kRsp] = (state.gpr[kRsp] & ~uint64_t{0xffff}) | (new_sp & 0xffff);
  }
  state.rip = offset;
  state.write_rflags(new_flags);
  update_alignment_check();
  if (outer) drop_inaccessible_segments(*this);
}

}  // namespace lamina::cpu::x86
