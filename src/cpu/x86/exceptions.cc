// Exception and interrupt delivery through the real-mode IVT, the protected-mode IDT and the
// long-mode IDT, with privilege-level stack switches from the TSS and IST stacks
// (SDM vol. 3A, 6.10-6.14; 20.1.4 for real mode).
#include <array>

#include "cpu/x86/core.h"
#include "cpu/x86/system/virtual_8086.h"
#include "cpu/x86/transfer_rollback.h"

namespace lamina::cpu::x86 {

namespace {

constexpr uint64_t kClearedOnDelivery = rflags::kTf | rflags::kNt | rflags::kRf | rflags::kVm;

// SDM Figure 20-5: an event from virtual-8086 mode pushes GS, FS, DS, ES, SS, ESP, EFLAGS, CS,
// EIP (and the error code) on the ring-0 stack.
void push_virtual_8086_frame(CpuCore& core, uint8_t size, const std::array<uint16_t, 6>& segments,
                             uint64_t flags, uint64_t old_rsp, bool has_error_code,
                             uint32_t error_code) {
  const Virtual8086InterruptFrame frame = virtual_8086_interrupt_frame(
      segments, static_cast<uint32_t>(old_rsp), static_cast<uint32_t>(flags),
      static_cast<uint32_t>(core.state.rip), has_error_code, error_code);
  for (uint8_t i = 0; i < frame.count; ++i) core.push(frame.values[i], size);
}

}  // namespace

void CpuCore::deliver(uint8_t vector_number, bool has_error_code, uint32_t error_code,
                      bool software, bool external, bool fault) {
  try {
    enter_handler(vector_number, has_error_code, error_code, software, external, fault);
  } catch (GuestFault& nested) {
    // SDM 6.13: a fault raised while delivering an event other than INT n/INT3/INTO has EXT
    // (bit 0) set in its selector error code: the checks of system/ set it themselves, this
    // covers the rest (the frame's pushes, a task switch through a task gate and its loads).
    const bool selector_code = nested.vector == vector::kInvalidTss || nested.vector == vector::kSegmentNotPresent ||
                               nested.vector == vector::kStackFault || nested.vector == vector::kGeneralProtection;
    if (external && nested.has_error_code && selector_code) nested.error_code |= 1;
    throw;
  }
}

void CpuCore::enter_handler(uint8_t vector_number, bool has_error_code, uint32_t error_code,
                            bool software, bool external, bool fault) {
  state.halted = false;
  stop_block = true;
  event_delivered = true;
  // SDM 17.2.4: GD is cleared on entry to the #DB handler, so it can use the debug registers.
  if (vector_number == vector::kDebug && !software) state.dr[7] &= ~dr7::kGd;
  // The frame's pushes are implicit accesses, like the IDT and TSS reads: Lamina matches them
  // against no data breakpoint, in every mode (the long-mode frame is written directly).
  struct KeepHits {
    uint8_t& hits;
    const uint8_t saved;
    ~KeepHits() { hits = saved; }
  } keep_hits{debug_hits, debug_hits};
  const uint64_t flags = read_rflags() | (fault ? rflags::kRf : 0);

  if (!state.protected_mode()) {
    // Real mode: 4-byte IVT entries (offset, segment); push FLAGS, CS, IP.
    if (vector_number * 4u + 3u > state.idtr.limit) raise_fault(vector::kGeneralProtection, 0);
    const uint64_t entry = read_system(state.idtr.base + vector_number * 4u, 4);
    push(flags & 0xffff, 2);
    push(state.segment[kCs].selector, 2);
    push(state.rip & 0xffff, 2);
    state.rflags &= ~(rflags::kIf | rflags::kTf | rflags::kAc | rflags::kRf);
    SegmentCache& code = state.segment[kCs];
    code.selector = static_cast<uint16_t>(entry >> 16);
    code.base = uint64_t{code.selector} << 4;
    state.rip = entry & 0xffff;
    update_mode();
    return;
  }
  const bool from_virtual_8086 = state.virtual_8086();
  const bool long_mode = state.long_mode_active();
  const uint32_t entry_size = long_mode ? 16 : 8;
  if (vector_number * entry_size + entry_size - 1 > state.idtr.limit)
    raise_fault(vector::kGeneralProtection, idt_error_code(vector_number, external));
  const uint64_t gate_address = state.idtr.base + vector_number * entry_size;
  const uint64_t low = read_system(gate_address, 8);
  const uint64_t high = long_mode ? read_system(gate_address + 8, 8) : 0;
  const GateDescriptor gate = checked(
      check_interrupt_gate(vector_number, low, high, software, state.cpl, long_mode, external));
  if (gate.kind == GateKind::kTask) {
    event_task_switch(gate.selector, vector_number, has_error_code, error_code, external);
    return;
  }
  const std::optional<uint64_t> code_descriptor = read_descriptor(gate.selector);
  const InterruptTarget target = checked(check_interrupt_code_segment(
      gate.selector, code_descriptor, state.cpl, long_mode, external, from_virtual_8086));
  const SegmentCache code = segment_cache(target.code);
  // SDM vol. 2 INT n: an entry point outside CS (or not canonical) is #GP(EXT).
  if (long_mode ? !is_canonical(gate.offset) : gate.offset > code.limit)
    raise_fault(vector::kGeneralProtection, external ? 1u : 0u);
  const uint8_t new_cpl = target.new_cpl;

  const uint16_t old_ss = state.segment[kSs].selector;
  const uint64_t old_rsp = state.gpr[kRsp];
  const uint16_t old_cs = state.segment[kCs].selector;
  // Virtual-8086 mode's segments, pushed by push_virtual_8086_frame before they are cleared.
  std::array<uint16_t, 6> old_segments{};
  for (size_t i = 0; i < old_segments.size(); ++i) old_segments[i] = state.segment[i].selector;
  TransferRollback rollback(*this);

  if (long_mode) {
    // 64-bit frame: SS, RSP, RFLAGS, CS, RIP, error code; aligned to 16 (SDM 6.14.2).
    uint64_t rsp = old_rsp;
    if (gate.ist != 0 || target.more_privileged)
      rsp = tss_inner_stack(new_cpl, gate.ist).pointer;
    rsp &= ~uint64_t{15};
    const uint64_t frame[6] = {old_ss, old_rsp, flags, old_cs, state.rip, error_code};
    const int count = has_error_code ? 6 : 5;
    const uint64_t top = rsp - count * 8u;
    for (int i = 0; i < count; ++i) write_system(top + (count - 1 - i) * 8u, 8, frame[i]);
    if (target.more_privileged) {
      // The new SS is a null selector with RPL = the new CPL (SDM 6.14.4).
      state.segment[kSs] = SegmentCache{new_cpl, 0, 0xffffffff,
                                        static_cast<uint16_t>(0xc093 | (new_cpl << 5))};
    }
    state.gpr[kRsp] = top;
  } else {
    const uint8_t size = gate.bits / 8;
    if (target.more_privileged) {
      const InnerStack stack = tss_inner_stack(new_cpl, 0);
      const std::optional<uint64_t> stack_descriptor = read_descriptor(stack.selector);
      const LoadedSegment stack_segment = checked(
          check_inner_stack_segment(stack.selector, stack_descriptor, new_cpl, external));
      state.cpl = new_cpl;  // the pushes below are supervisor accesses on the new stack
      // Leaving virtual-8086 mode: the new SS and the pushes use protected-mode rules.
      state.rflags &= ~rflags::kVm;
      install_segment(kSs, stack_segment, stack_descriptor);
      set_stack_pointer(stack.pointer);
      if (from_virtual_8086) {
        push_virtual_8086_frame(*this, size, old_segments, flags, old_rsp, has_error_code,
                                error_code);
      } else {
        push(old_ss, size);
        push(old_rsp, size);
      }
    }
    if (!from_virtual_8086) {
      push(flags, size);
      push(old_cs, size);
      push(state.rip, size);
      if (has_error_code) push(error_code, size);
    }
  }
  mark_accessed(gate.selector, *code_descriptor);
  rollback.commit();
  // SDM 20.3.1.1: the handler starts with null data segments; it finds the v86 ones pushed.
  if (from_virtual_8086) {
    for (uint8_t segment : {kEs, kDs, kFs, kGs}) state.segment[segment] = SegmentCache{0, 0, 0, 0};
  }
  state.rflags &= ~kClearedOnDelivery;
  // An interrupt gate clears IF, a trap gate leaves it (SDM 6.12.1.3).
  if (gate.kind == GateKind::kInterrupt) state.rflags &= ~rflags::kIf;
  set_code_segment(code, new_cpl);
  state.rip = gate.offset;
}

}  // namespace lamina::cpu::x86
