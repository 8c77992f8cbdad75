// Exception and interrupt delivery through the real-mode IVT, the protected-mode IDT and the
// long-mode IDT, with privilege-level stack switches from the TSS and IST stacks
// (SDM vol. 3A, 6.10-6.14; 20.1.4 for real mode).
#include "cpu/x86/core.h"

namespace lamina::cpu::x86 {

namespace {

constexpr uint64_t kClearedOnDelivery = rflags::kTf | rflags::kNt | rflags::kRf | rflags::kVm;

struct GateTarget {
  SegmentCache code;
  uint8_t new_cpl;
};

}  // namespace

void CpuCore::deliver(uint8_t vector_number, bool has_error_code, uint32_t error_code,
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
  const uint32_t idt_error = vector_number * 8u + 2u + (external ? 1u : 0u);
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
  if (state.virtual_8086()) raise_fault(vector::kGeneralProtection, 0);  // VM86 not supported

  const bool long_mode = state.long_mode_active();
  const uint32_t entry_size = long_mode ? 16 : 8;
  if (vector_number * entry_size + entry_size - 1 > state.idtr.limit)
    raise_fault(vector::kGeneralProtection, idt_error);
  const uint64_t gate_address = state.idtr.base + vector_number * entry_size;
  const uint64_t low = read_system(gate_address, 8);
  const uint64_t high = long_mode ? read_system(gate_address + 8, 8) : 0;
  const uint8_t type = (low >> 40) & 0xf;
  const uint8_t gate_dpl = (low >> 45) & 3;
  const bool gate_present = (low >> 47) & 1;
  const bool valid_type = long_mode ? (type == 0xe || type == 0xf)
                                    : (type == 0x6 || type == 0x7 || type == 0xe || type == 0xf);
  // Task gates (type 5) would need a hardware task switch, which is not supported.
  if (!valid_type) raise_fault(vector::kGeneralProtection, idt_error);
  if (software && gate_dpl < state.cpl) raise_fault(vector::kGeneralProtection, idt_error);
  if (!gate_present) raise_fault(vector::kSegmentNotPresent, idt_error);

  const uint16_t code_selector = static_cast<uint16_t>(low >> 16);
  uint64_t offset = (low & 0xffff) | ((low >> 32) & 0xffff0000);
  if (long_mode) offset |= high << 32;
  if (type == 0x6 || type == 0x7) offset &= 0xffff;
  if ((code_selector & ~3u) == 0) raise_fault(vector::kGeneralProtection, external ? 1u : 0u);
  const uint64_t descriptor = read_descriptor(code_selector);
  SegmentCache code = make_cache(code_selector, descriptor);
  const uint32_t selector_error = (code_selector & ~3u) | (external ? 1u : 0u);
  if (!code.code_or_data() || !(code.type() & 8) || code.dpl() > state.cpl)
    raise_fault(vector::kGeneralProtection, selector_error);
  if (long_mode && (!code.long_mode() || code.default_big()))
    raise_fault(vector::kGeneralProtection, selector_error);
  if (!code.present()) raise_fault(vector::kSegmentNotPresent, selector_error);
  const bool conforming = code.type() & 4;
  const uint8_t new_cpl = conforming ? state.cpl : code.dpl();

  const uint16_t old_ss = state.segment[kSs].selector;
  const uint64_t old_rsp = state.gpr[kRsp];
  const uint16_t old_cs = state.segment[kCs].selector;

  if (long_mode) {
    // 64-bit frame: SS, RSP, RFLAGS, CS, RIP, error code; aligned to 16 (SDM 6.14.2).
    const uint8_t ist = (low >> 32) & 7;
    uint64_t rsp = old_rsp;
    if (ist != 0) {
      const uint32_t ist_offset = 0x24 + (ist - 1) * 8;
      if (ist_offset + 7 > state.tr.limit) raise_fault(vector::kInvalidTss, state.tr.selector & ~3u);
      rsp = read_system(state.tr.base + ist_offset, 8);
    } else if (new_cpl < state.cpl) {
      rsp = tss_stack_pointer(new_cpl, nullptr);
    }
    rsp &= ~uint64_t{15};
    const uint64_t frame[6] = {old_ss, old_rsp, flags, old_cs, state.rip, error_code};
    const int count = has_error_code ? 6 : 5;
    const uint64_t top = rsp - count * 8u;
    for (int i = 0; i < count; ++i) write_system(top + (count - 1 - i) * 8u, 8, frame[i]);
    if (new_cpl < state.cpl) {
      state.segment[kSs] = SegmentCache{new_cpl, 0, 0xffffffff,
                                        static_cast<uint16_t>(0xc093 | (new_cpl << 5))};
    }
    state.gpr[kRsp] = top;
  } else {
    const uint8_t size = (type & 8) ? 4 : 2;
    if (new_cpl < state.cpl) {
      uint16_t stack_selector = 0;
      const uint64_t esp = tss_stack_pointer(new_cpl, &stack_selector);
      if ((stack_selector & ~3u) == 0) raise_fault(vector::kInvalidTss, external ? 1u : 0u);
      const SegmentCache stack = make_cache(stack_selector, read_descriptor(stack_selector, vector::kInvalidTss));
      if ((stack_selector & 3) != new_cpl || stack.dpl() != new_cpl || (stack.type() & 8) ||
          !(stack.type() & 2))
        raise_fault(vector::kInvalidTss, stack_selector & ~3u);
      if (!stack.present()) raise_fault(vector::kStackFault, stack_selector & ~3u);
      state.segment[kSs] = stack;
      state.gpr[kRsp] = stack.default_big() ? esp : (state.gpr[kRsp] & ~uint64_t{0xffff}) | (esp & 0xffff);
      state.cpl = new_cpl;  // the pushes below are supervisor accesses on the new stack
      update_mode();
      push(old_ss, size);
      push(old_rsp, size);
    }
    push(flags, size);
    push(old_cs, size);
    push(state.rip, size);
    if (has_error_code) push(error_code, size);
  }
  state.rflags &= ~kClearedOnDelivery;
  if (!(type & 1)) state.rflags &= ~rflags::kIf;  // interrupt gate, not trap gate
  set_code_segment(code, new_cpl);
  state.rip = offset;
}

}  // namespace lamina::cpu::x86
