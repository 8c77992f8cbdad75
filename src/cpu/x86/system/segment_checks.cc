#include "cpu/x86/system/segment_checks.h"

#include "cpu/x86/system/page_walker.h"

namespace lamina::cpu::x86 {

namespace {

using Failure = std::unexpected<Fault>;

uint32_t selector_error(uint16_t selector, bool external = false) {
  return (selector & 0xfffcu) | (external ? 1u : 0u);
}
Failure general_protection(uint16_t selector, bool external = false) {
  return Failure({exception_vector::kGeneralProtection, selector_error(selector, external)});
}
Failure general_protection_zero(bool external = false) {
  return Failure({exception_vector::kGeneralProtection, external ? 1u : 0u});
}
Failure not_present(uint16_t selector, bool external = false) {
  return Failure({exception_vector::kSegmentNotPresent, selector_error(selector, external)});
}
Failure stack_fault(uint16_t selector, bool external = false) {
  return Failure({exception_vector::kStackFault, selector_error(selector, external)});
}
Failure invalid_tss(uint16_t selector, bool external = false) {
  return Failure({exception_vector::kInvalidTss, selector_error(selector, external)});
}

LoadedSegment loaded(uint16_t selector, const SegmentDescriptor& descriptor) {
  return LoadedSegment{selector, descriptor, false};
}

// L = D = 1 is reserved for code segments in IA-32e mode (SDM 5.2.1).
bool reserved_code_size(const SegmentDescriptor& descriptor, bool long_mode) {
  return long_mode && descriptor.long_mode && descriptor.default_big;
}

bool is_available_tss(const SegmentDescriptor& descriptor, bool long_mode) {
  if (!descriptor.system) return false;
  if (long_mode) return descriptor.type == system_type::kTssAvailable;
  return descriptor.type == system_type::kTssAvailable ||
         descriptor.type == system_type::kTss16Available;
}

}  // namespace

std::expected<LoadedSegment, Fault> check_data_segment_load(uint16_t selector,
                                                            std::optional<uint64_t> raw,
                                                            uint8_t cpl) {
  // A null selector loads an unusable register without a fault (MOV pseudo code).
  if (selector_is_null(selector)) return LoadedSegment{selector, {}, true};
  if (!raw) return general_protection(selector);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (descriptor.system || !descriptor.readable()) return general_protection(selector);
  // Data and non-conforming code need RPL <= DPL and CPL <= DPL; conforming code is exempt.
  if (!descriptor.conforming() &&
      (selector_rpl(selector) > descriptor.dpl || cpl > descriptor.dpl)) {
    return general_protection(selector);
  }
  if (!descriptor.present) return not_present(selector);
  return loaded(selector, descriptor);
}

std::expected<LoadedSegment, Fault> check_stack_segment_load(uint16_t selector,
                                                             std::optional<uint64_t> raw,
                                                             uint8_t cpl, bool mode_64) {
  if (selector_is_null(selector)) {
    // 64-bit mode allows a null SS below CPL 3 when RPL = CPL (SDM MOV pseudo code).
    if (mode_64 && cpl != 3 && selector_rpl(selector) == cpl) {
      LoadedSegment segment{selector, {}, true};
      segment.descriptor.dpl = cpl;
      return segment;
    }
    return general_protection_zero();
  }
  if (!raw) return general_protection(selector);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (selector_rpl(selector) != cpl || !descriptor.writable() || descriptor.dpl != cpl) {
    return general_protection(selector);
  }
  if (!descriptor.present) return stack_fault(selector);
  return loaded(selector, descriptor);
}

std::expected<FarTarget, Fault> check_far_transfer(FarTransfer, uint16_t selector,
                                                   std::optional<uint64_t> raw, uint8_t cpl,
                                                   bool long_mode) {
  if (selector_is_null(selector)) return general_protection_zero();
  if (!raw) return general_protection(selector);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  uint8_t rpl = selector_rpl(selector);
  FarTarget target;
  target.descriptor = descriptor;
  if (descriptor.is_code()) {
    if (reserved_code_size(descriptor, long_mode)) return general_protection(selector);
    // Conforming: DPL <= CPL. Non-conforming: RPL <= CPL and DPL = CPL (JMP/CALL pseudo code).
    if (descriptor.conforming() ? descriptor.dpl > cpl : (rpl > cpl || descriptor.dpl != cpl)) {
      return general_protection(selector);
    }
    if (!descriptor.present) return not_present(selector);
    target.kind = FarTargetKind::kCodeSegment;
    target.code = loaded(static_cast<uint16_t>((selector & 0xfffc) | cpl), descriptor);
    return target;
  }
  if (!descriptor.system) return general_protection(selector);  // data segments
  switch (descriptor.type) {
    case system_type::kCallGate16:
    case system_type::kCallGate:
      // IA-32e mode has only the 64-bit call gate (type C).
      if (long_mode && descriptor.type != system_type::kCallGate) {
        return general_protection(selector);
      }
      target.kind = FarTargetKind::kCallGate;
      break;
    case system_type::kTaskGate:
      if (long_mode) return general_protection(selector);
      target.kind = FarTargetKind::kTaskGate;
      break;
    case system_type::kTss16Available:
    case system_type::kTssAvailable:
    case system_type::kTss16Busy:
    case system_type::kTssBusy:
      if (long_mode) return general_protection(selector);  // no task switches in IA-32e mode
      target.kind = FarTargetKind::kTss;
      break;
    default: return general_protection(selector);
  }
  // Gates and TSSs: DPL >= CPL and DPL >= RPL, then present.
  if (descriptor.dpl < cpl || rpl > descriptor.dpl) return general_protection(selector);
  if (target.kind == FarTargetKind::kTss &&
      (descriptor.type == system_type::kTss16Busy || descriptor.type == system_type::kTssBusy)) {
    return general_protection(selector);
  }
  if (!descriptor.present) return not_present(selector);
  return target;
}

std::expected<CallGateTarget, Fault> check_call_gate_target(FarTransfer transfer,
                                                            uint16_t code_selector,
                                                            std::optional<uint64_t> raw,
                                                            uint8_t cpl, bool long_mode) {
  if (selector_is_null(code_selector)) return general_protection_zero();
  if (!raw) return general_protection(code_selector);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (!descriptor.is_code() || descriptor.dpl > cpl) return general_protection(code_selector);
  // JMP through a call gate never changes privilege: non-conforming targets need DPL = CPL.
  if (transfer == FarTransfer::kJump && !descriptor.conforming() && descriptor.dpl != cpl) {
    return general_protection(code_selector);
  }
  // A 64-bit call gate must lead to a 64-bit code segment (SDM 5.8.3.1).
  if (long_mode && !descriptor.is_64bit_code()) return general_protection(code_selector);
  if (!descriptor.present) return not_present(code_selector);
  CallGateTarget target;
  target.more_privileged =
      transfer == FarTransfer::kCall && !descriptor.conforming() && descriptor.dpl < cpl;
  target.new_cpl = target.more_privileged ? descriptor.dpl : cpl;
  target.code =
      loaded(static_cast<uint16_t>((code_selector & 0xfffc) | target.new_cpl), descriptor);
  return target;
}

std::expected<SegmentDescriptor, Fault> check_task_gate_tss(uint16_t tss_selector,
                                                            std::optional<uint64_t> raw) {
  if (selector_is_local(tss_selector) || !raw) return general_protection(tss_selector);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (!is_available_tss(descriptor, false)) return general_protection(tss_selector);
  if (!descriptor.present) return not_present(tss_selector);
  return descriptor;
}

std::expected<ReturnTarget, Fault> check_return_code_segment(uint16_t selector,
                                                             std::optional<uint64_t> raw,
                                                             uint8_t cpl, bool long_mode) {
  if (selector_is_null(selector)) return general_protection_zero();
  if (!raw) return general_protection(selector);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  uint8_t rpl = selector_rpl(selector);
  if (!descriptor.is_code() || rpl < cpl) return general_protection(selector);
  // Conforming: DPL <= RPL; non-conforming: DPL = RPL (RET pseudo code).
  if (descriptor.conforming() ? descriptor.dpl > rpl : descriptor.dpl != rpl) {
    return general_protection(selector);
  }
  if (reserved_code_size(descriptor, long_mode)) return general_protection(selector);
  if (!descriptor.present) return not_present(selector);
  ReturnTarget target;
  target.code = loaded(selector, descriptor);
  target.new_cpl = rpl;
  target.outer = rpl > cpl;
  return target;
}

std::expected<LoadedSegment, Fault> check_return_stack_segment(uint16_t selector,
                                                               std::optional<uint64_t> raw,
                                                               uint8_t new_cpl, bool to_mode_64) {
  // RET and IRET pseudo code: the returned SS obeys what MOV SS at the new CPL would.
  return check_stack_segment_load(selector, raw, new_cpl, to_mode_64);
}

bool must_null_after_return(const LoadedSegment& segment, uint8_t new_cpl) {
  if (segment.null) return false;
  const SegmentDescriptor& descriptor = segment.descriptor;
  bool data_or_nonconforming =
      descriptor.is_data() || (descriptor.is_code() && !descriptor.conforming());
  return data_or_nonconforming && descriptor.dpl < new_cpl;
}

std::expected<GateDescriptor, Fault> check_interrupt_gate(uint8_t vector, uint64_t low,
                                                          uint64_t high, bool software, uint8_t cpl,
                                                          bool long_mode, bool external) {
  auto fault = [&](uint8_t exception) {
    return Failure({exception, idt_error_code(vector, external)});
  };
  std::optional<GateDescriptor> gate = decode_gate(low, high, long_mode);
  // SDM 6.12.1.1: only interrupt, trap and task gates may be in the IDT.
  if (!gate || gate->kind == GateKind::kCall) return fault(exception_vector::kGeneralProtection);
  // INT n/INT3/INTO need CPL <= gate DPL (SDM 6.12.1.1); checked before presence.
  if (software && gate->dpl < cpl) return fault(exception_vector::kGeneralProtection);
  if (!gate->present) return fault(exception_vector::kSegmentNotPresent);
  return *gate;
}

std::expected<InterruptTarget, Fault> check_interrupt_code_segment(uint16_t selector,
                                                                   std::optional<uint64_t> raw,
                                                                   uint8_t cpl, bool long_mode,
                                                                   bool external,
                                                                   bool from_virtual_8086) {
  if (selector_is_null(selector)) return general_protection_zero(external);
  if (!raw) return general_protection(selector, external);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (!descriptor.is_code() || descriptor.dpl > cpl) return general_protection(selector, external);
  if (!descriptor.present) return not_present(selector, external);
  if (long_mode && !descriptor.is_64bit_code()) return general_protection(selector, external);
  InterruptTarget target;
  target.more_privileged = !descriptor.conforming() && descriptor.dpl < cpl;
  if (from_virtual_8086 && (!target.more_privileged || descriptor.dpl != 0))
    return general_protection(selector, external);
  target.new_cpl = target.more_privileged ? descriptor.dpl : cpl;
  target.code = loaded(static_cast<uint16_t>((selector & 0xfffc) | target.new_cpl), descriptor);
  return target;
}

std::expected<LoadedSegment, Fault> check_inner_stack_segment(uint16_t selector,
                                                              std::optional<uint64_t> raw,
                                                              uint8_t new_cpl, bool external) {
  if (selector_is_null(selector)) {
    return Failure({exception_vector::kInvalidTss, external ? 1u : 0u});
  }
  if (!raw) return invalid_tss(selector, external);
  SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (selector_rpl(selector) != new_cpl || descriptor.dpl != new_cpl || !descriptor.writable()) {
    return invalid_tss(selector, external);
  }
  if (!descriptor.present) return stack_fault(selector, external);
  return loaded(selector, descriptor);
}

std::expected<LoadedSegment, Fault> check_ltr(uint16_t selector, std::optional<uint64_t> low,
                                              std::optional<uint64_t> high, bool long_mode) {
  if (selector_is_null(selector)) return general_protection_zero();
  if (selector_is_local(selector) || !low) return general_protection(selector);
  // SDM 7.2.3: in IA-32e mode the whole 16-byte descriptor must lie within the GDT.
  if (long_mode && !high) return general_protection(selector);
  std::optional<SegmentDescriptor> descriptor =
      long_mode ? decode_system_descriptor_64(*low, *high) : decode_segment_descriptor(*low);
  if (!descriptor || !is_available_tss(*descriptor, long_mode)) return general_protection(selector);
  if (long_mode && !is_canonical(descriptor->base)) return general_protection(selector);
  if (!descriptor->present) return not_present(selector);
  return loaded(selector, *descriptor);
}

std::expected<LoadedSegment, Fault> check_lldt(uint16_t selector, std::optional<uint64_t> low,
                                               std::optional<uint64_t> high, bool long_mode) {
  if (selector_is_null(selector)) return LoadedSegment{selector, {}, true};
  if (selector_is_local(selector) || !low) return general_protection(selector);
  if (long_mode && !high) return general_protection(selector);
  std::optional<SegmentDescriptor> descriptor =
      long_mode ? decode_system_descriptor_64(*low, *high) : decode_segment_descriptor(*low);
  if (!descriptor || !descriptor->system || descriptor->type != system_type::kLdt) {
    return general_protection(selector);
  }
  if (long_mode && !is_canonical(descriptor->base)) return general_protection(selector);
  if (!descriptor->present) return not_present(selector);
  return loaded(selector, *descriptor);
}

}  // namespace lamina::cpu::x86
