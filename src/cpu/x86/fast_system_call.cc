// SYSCALL/SYSRET (AMD64 APM vol. 2, 6.1.1, and vol. 3; SYSCALL as on AMD, the vendor Lamina
// advertises: also from compatibility and legacy protected mode),
// SYSENTER/SYSEXIT (SDM vol. 2) and SWAPGS. These load flat segments without reading the GDT.
#include "cpu/x86/handlers.h"
#include "cpu/x86/operands.h"

namespace lamina::cpu::x86 {
namespace {

// Flat segment caches as the fast system-call instructions define them.
SegmentCache flat_code(uint16_t selector, uint8_t dpl, bool long_mode) {
  const uint16_t attributes = static_cast<uint16_t>(0x9b | (dpl << 5) | (long_mode ? 0xa000 : 0xc000));
  return SegmentCache{selector, 0, 0xffffffff, attributes};
}
SegmentCache flat_stack(uint16_t selector, uint8_t dpl) {
  return SegmentCache{selector, 0, 0xffffffff, static_cast<uint16_t>(0xc093 | (dpl << 5))};
}

// AMD64 APM vol. 3, SYSCALL: Lamina advertises AMD, so SYSCALL works in every protected mode:
// from 64-bit mode through LSTAR, from compatibility mode through CSTAR (both with RCX = next
// RIP, R11 = RFLAGS, RFLAGS masked by SFMASK), and in legacy mode through STAR[31:0] (ECX =
// next EIP; IF, VM and RF cleared).
void system_call(CpuCore& core, const Instruction&) {
  CpuState& state = core.state;
  if (!(state.msr.efer & efer::kSce) || !state.protected_mode())
    raise_fault(vector::kInvalidOpcode);
  const uint16_t selector = static_cast<uint16_t>(state.msr.star >> 32);
  const uint64_t flags = core.read_rflags();
  state.segment[kSs] = flat_stack(static_cast<uint16_t>((selector + 8) & 0xfffc), 0);
  if (state.long_mode_active()) {
    state.gpr[kRcx] = state.rip;
    state.gpr[kR11] = flags & ~rflags::kRf;
    state.write_rflags((flags & ~state.msr.sfmask & ~rflags::kRf) | rflags::kFixed1);
    const bool from_64 = core.code_mode == CodeMode::k64;
    core.set_code_segment(flat_code(selector & 0xfffc, 0, true), 0);
    state.rip = from_64 ? state.msr.lstar : state.msr.cstar;
    return;
  }
  state.gpr[kRcx] = state.rip & 0xffffffffu;
  state.write_rflags(flags & ~(rflags::kIf | rflags::kVm | rflags::kRf));
  core.set_code_segment(flat_code(selector & 0xfffc, 0, false), 0);
  state.rip = state.msr.star & 0xffffffffu;
}

void system_return(CpuCore& core, const Instruction& in) {
  CpuState& state = core.state;
  if (!(state.msr.efer & efer::kSce)) raise_fault(vector::kInvalidOpcode);
  if (core.code_mode != CodeMode::k64 || state.cpl != 0) raise_fault(vector::kGeneralProtection, 0);
  const uint16_t base = static_cast<uint16_t>(state.msr.star >> 48);
  uint64_t target = state.gpr[kRcx];
  if (in.rex_w) {
    // Intel raises #GP in ring 0 for a non-canonical RCX (the AMD behaviour faults in ring 3).
    if (static_cast<uint64_t>(static_cast<int64_t>(target << 16) >> 16) != target)
      raise_fault(vector::kGeneralProtection, 0);
  } else {
    target &= 0xffffffffu;
  }
  state.write_rflags((state.gpr[kR11] & 0x3c7fd7) | rflags::kFixed1);
  core.interrupt_window_may_open();
  state.segment[kSs] = flat_stack(static_cast<uint16_t>((base + 8) | 3), 3);
  const uint16_t code_selector = static_cast<uint16_t>((in.rex_w ? base + 16 : base) | 3);
  core.set_code_segment(flat_code(code_selector, 3, in.rex_w), 3);
  state.rip = target;
}

void system_enter(CpuCore& core, const Instruction&) {
  CpuState& state = core.state;
  if (!state.protected_mode()) raise_fault(vector::kGeneralProtection, 0);
  const uint16_t selector = static_cast<uint16_t>(state.msr.sysenter_cs);
  if ((selector & 0xfffc) == 0) raise_fault(vector::kGeneralProtection, 0);
  const bool long_mode = state.long_mode_active();
  state.rflags &= ~(rflags::kVm | rflags::kIf | rflags::kRf);
  state.segment[kSs] = flat_stack(static_cast<uint16_t>((selector + 8) & 0xfffc), 0);
  core.set_code_segment(flat_code(selector & 0xfffc, 0, long_mode), 0);
  state.gpr[kRsp] = long_mode ? state.msr.sysenter_esp : state.msr.sysenter_esp & 0xffffffffu;
  state.rip = long_mode ? state.msr.sysenter_eip : state.msr.sysenter_eip & 0xffffffffu;
}

void system_exit(CpuCore& core, const Instruction& in) {
  CpuState& state = core.state;
  const uint16_t selector = static_cast<uint16_t>(state.msr.sysenter_cs);
  if (!state.protected_mode() || state.cpl != 0 || (selector & 0xfffc) == 0)
    raise_fault(vector::kGeneralProtection, 0);
  const bool to_64 = in.rex_w;
  state.segment[kSs] = flat_stack(static_cast<uint16_t>((selector + (to_64 ? 40 : 24)) | 3), 3);
  core.set_code_segment(flat_code(static_cast<uint16_t>((selector + (to_64 ? 32 : 16)) | 3), 3, to_64), 3);
  state.gpr[kRsp] = to_64 ? state.gpr[kRcx] : state.gpr[kRcx] & 0xffffffffu;
  state.rip = to_64 ? state.gpr[kRdx] : state.gpr[kRdx] & 0xffffffffu;
}

void swap_gs(CpuCore& core, const Instruction&) {
  if (core.state.cpl != 0) raise_fault(vector::kGeneralProtection, 0);
  std::swap(core.state.segment[kGs].base, core.state.msr.kernel_gs_base);
  core.update_mode();
}

}  // namespace

Handler select_fast_system_call_handler(const Instruction& in) {
  switch (in.opcode) {
    case 0x105: return &system_call;
    case 0x107: return &system_return;
    case 0x134: return &system_enter;
    case 0x135: return &system_exit;
    case 0x101: return in.modrm == 0xf8 ? &swap_gs : nullptr;
    default: return nullptr;
  }
}

}  // namespace lamina::cpu::x86
