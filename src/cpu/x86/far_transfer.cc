// Far JMP/CALL (direct, through call gates with a stack switch), far RET and IRET in real,
// protected and long mode (SDM vol. 3A, 5.8 and vol. 2, "CALL", "JMP", "RET", "IRET").
// Hardware task switches (TSS or task-gate targets, IRET with NT) are not supported: #GP.
#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {
namespace {

uint64_t mask_offset(uint64_t offset, uint8_t size) {
  return size == 2 ? offset & 0xffff : size == 4 ? offset & 0xffffffffu : offset;
}

bool real_addressing(const CpuState& state) { return !state.protected_mode() || state.virtual_8086(); }

void check_offset(const CpuCore& core, const SegmentCache& code, uint64_t offset, bool long_target) {
  if (long_target) {
    if (static_cast<uint64_t>(static_cast<int64_t>(offset << 16) >> 16) != offset)
      raise_fault(vector::kGeneralProtection, 0);
  } else if (offset > code.limit) {
    raise_fault(vector::kGeneralProtection, 0);
  }
  (void)core;
}

// The checks on a code segment reached directly by JMP/CALL (SDM 5.8.2).
SegmentCache direct_code_target(CpuCore& core, uint16_t selector, const SegmentCache& cache) {
  const uint32_t error = selector & ~3u;
  const bool conforming = cache.type() & 4;
  const uint8_t cpl = core.state.cpl;
  if (conforming ? cache.dpl() > cpl : ((selector & 3) > cpl || cache.dpl() != cpl))
    raise_fault(vector::kGeneralProtection, error);
  if (!cache.present()) raise_fault(vector::kSegmentNotPresent, error);
  return cache;
}

struct GateInfo {
  uint16_t code_selector;
  uint64_t offset;
  uint8_t size;          // 2, 4 or 8: the gate's operand size
  uint8_t parameter_count;
};

GateInfo read_call_gate(CpuCore& core, uint16_t selector, uint64_t descriptor, const SegmentCache& gate) {
  const uint32_t error = selector & ~3u;
  const uint8_t type = gate.type();
  const bool long_mode = core.state.long_mode_active();
  if (!(type == 0xc || (type == 0x4 && !long_mode))) raise_fault(vector::kGeneralProtection, error);
  if (gate.dpl() < core.state.cpl || gate.dpl() < (selector & 3)) raise_fault(vector::kGeneralProtection, error);
  if (!gate.present()) raise_fault(vector::kSegmentNotPresent, error);
  GateInfo info;
  info.code_selector = static_cast<uint16_t>(descriptor >> 16);
  info.offset = (descriptor & 0xffff) | ((descriptor >> 32) & 0xffff0000);
  info.size = type == 0x4 ? 2 : 4;
  info.parameter_count = (descriptor >> 32) & 0x1f;
  if (type == 0x4) info.offset &= 0xffff;
  if (long_mode) {
    // 16-byte gate: the upper half holds offset bits 63:32 (SDM 5.8.3.1).
    const uint64_t table = (selector & 4) ? core.state.ldtr.base : core.state.gdtr.base;
    const uint64_t high = core.read_system(table + (selector & ~7u) + 8, 8);
    if (((high >> 40) & 0x1f) != 0) raise_fault(vector::kGeneralProtection, error);
    info.offset |= high << 32;
    info.size = 8;
    info.parameter_count = 0;
  }
  if ((info.code_selector & ~3u) == 0) raise_fault(vector::kGeneralProtection, 0);
  return info;
}

}  // namespace

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
  if ((selector & ~3u) == 0) raise_fault(vector::kGeneralProtection, 0);
  const uint64_t descriptor = read_descriptor(selector);
  const SegmentCache cache = make_cache(selector, descriptor);
  if (cache.code_or_data()) {
    if (!(cache.type() & 8)) raise_fault(vector::kGeneralProtection, selector & ~3u);
    direct_code_target(*this, selector, cache);
    const bool long_target = state.long_mode_active() && cache.long_mode();
    offset = long_target ? offset : mask_offset(offset, operand_size);
    check_offset(*this, cache, offset, long_target);
    set_code_segment(cache, state.cpl);
    state.rip = offset;
    return;
  }
  const GateInfo gate = read_call_gate(*this, selector, descriptor, cache);
  const SegmentCache target = make_cache(gate.code_selector, read_descriptor(gate.code_selector));
  if (!target.code_or_data() || !(target.type() & 8)) raise_fault(vector::kGeneralProtection, gate.code_selector & ~3u);
  const bool conforming = target.type() & 4;
  if (conforming ? target.dpl() > state.cpl : target.dpl() != state.cpl)
    raise_fault(vector::kGeneralProtection, gate.code_selector & ~3u);
  if (!target.present()) raise_fault(vector::kSegmentNotPresent, gate.code_selector & ~3u);
  const bool long_target = state.long_mode_active() && target.long_mode();
  check_offset(*this, target, gate.offset, long_target);
  set_code_segment(target, state.cpl);
  state.rip = gate.offset;
}

void CpuCore::far_call(uint16_t selector, uint64_t offset, uint8_t operand_size) {
  const uint64_t return_rip = state.rip;
  const uint16_t return_cs = state.segment[kCs].selector;
  if (real_addressing(state)) {
    offset = mask_offset(offset, operand_size);
    if (offset > state.segment[kCs].limit) raise_fault(vector::kGeneralProtection, 0);
    const uint64_t saved_rsp = state.gpr[kRsp];
    try {
      push(return_cs, operand_size);
      push(return_rip, operand_size);
    } catch (const GuestFault&) {
      state.gpr[kRsp] = saved_rsp;
      throw;
    }
    far_jump(selector, offset, operand_size);
    return;
  }
  if ((selector & ~3u) == 0) raise_fault(vector::kGeneralProtection, 0);
  const uint64_t descriptor = read_descriptor(selector);
  const SegmentCache cache = make_cache(selector, descriptor);
  const uint64_t saved_rsp = state.gpr[kRsp];
  const SegmentCache saved_ss = state.segment[kSs];
  if (cache.code_or_data()) {
    if (!(cache.type() & 8)) raise_fault(vector::kGeneralProtection, selector & ~3u);
    direct_code_target(*this, selector, cache);
    const bool long_target = state.long_mode_active() && cache.long_mode();
    offset = long_target ? offset : mask_offset(offset, operand_size);
    check_offset(*this, cache, offset, long_target);
    try {
      push(return_cs, operand_size);
      push(return_rip, operand_size);
    } catch (const GuestFault&) {
      state.gpr[kRsp] = saved_rsp;
      throw;
    }
    set_code_segment(cache, state.cpl);
    state.rip = offset;
    return;
  }
  const GateInfo gate = read_call_gate(*this, selector, descriptor, cache);
  const SegmentCache target = make_cache(gate.code_selector, read_descriptor(gate.code_selector));
  const uint32_t target_error = gate.code_selector & ~3u;
  if (!target.code_or_data() || !(target.type() & 8) || target.dpl() > state.cpl)
    raise_fault(vector::kGeneralProtection, target_error);
  if (!target.present()) raise_fault(vector::kSegmentNotPresent, target_error);
  const bool long_target = state.long_mode_active() && target.long_mode();
  if (state.long_mode_active() && !long_target) raise_fault(vector::kGeneralProtection, target_error);
  check_offset(*this, target, gate.offset, long_target);
  const bool conforming = target.type() & 4;
  const uint8_t old_cpl = state.cpl;
  const uint8_t new_cpl = conforming ? old_cpl : target.dpl();
  const uint64_t old_rsp = state.gpr[kRsp];
  const uint16_t old_ss = state.segment[kSs].selector;
  try {
    if (new_cpl < old_cpl) {
      // Inner privilege: new stack from the TSS, then old SS:SP, parameters, CS:IP.
      uint16_t stack_selector = 0;
      const uint64_t new_sp = tss_stack_pointer(new_cpl, &stack_selector);
      const uint64_t old_stack_base = state.segment[kSs].base;
      const uint64_t old_mask = state.segment[kSs].default_big() ? 0xffffffffu : 0xffffu;
      state.cpl = new_cpl;
      if (state.long_mode_active()) {
        state.segment[kSs] = SegmentCache{new_cpl, 0, 0xffffffff, static_cast<uint16_t>(0xc093 | (new_cpl << 5))};
        state.gpr[kRsp] = new_sp;
        update_mode();
      } else {
        load_segment(kSs, stack_selector);
        state.gpr[kRsp] = state.segment[kSs].default_big() ? new_sp & 0xffffffffu : (state.gpr[kRsp] & ~uint64_t{0xffff}) | (new_sp & 0xffff);
      }
      // Pushes at the new CPL are supervisor accesses; 64-bit gates push 8-byte values.
      const uint8_t push_size = long_target ? 8 : gate.size;
      push(old_ss, push_size);
      push(old_rsp, push_size);
      for (int i = gate.parameter_count - 1; i >= 0; --i) {
        const uint64_t address = old_stack_base + ((old_rsp + i * gate.size) & old_mask);
        push(read_system(address, gate.size), gate.size);
      }
      push(return_cs, push_size);
      push(return_rip, push_size);
    } else {
      const uint8_t push_size = long_target ? 8 : gate.size;
      push(return_cs, push_size);
      push(return_rip, push_size);
    }
  } catch (const GuestFault&) {
    state.cpl = old_cpl;
    state.segment[kSs] = saved_ss;
    state.gpr[kRsp] = saved_rsp;
    update_mode();
    throw;
  }
  set_code_segment(target, new_cpl);
  state.rip = gate.offset;
}

}  // namespace lamina::cpu::x86
