#include "accel/kvm_state.h"

#include <cstring>
#include <tuple>

namespace lamina::accel::kvm {
namespace {

using cpu::x86::CpuState;
using cpu::x86::SegmentCache;

// CpuState's general registers are in encoding order; kvm_regs names them.
struct GprSlot {
  cpu::x86::Gpr gpr;
  __u64 kvm_regs::*field;
};
constexpr GprSlot kGprSlots[] = {
    {cpu::x86::kRax, &kvm_regs::rax}, {cpu::x86::kRcx, &kvm_regs::rcx},
    {cpu::x86::kRdx, &kvm_regs::rdx}, {cpu::x86::kRbx, &kvm_regs::rbx},
    {cpu::x86::kRsp, &kvm_regs::rsp}, {cpu::x86::kRbp, &kvm_regs::rbp},
    {cpu::x86::kRsi, &kvm_regs::rsi}, {cpu::x86::kRdi, &kvm_regs::rdi},
    {cpu::x86::kR8, &kvm_regs::r8},   {cpu::x86::kR9, &kvm_regs::r9},
    {cpu::x86::kR10, &kvm_regs::r10}, {cpu::x86::kR11, &kvm_regs::r11},
    {cpu::x86::kR12, &kvm_regs::r12}, {cpu::x86::kR13, &kvm_regs::r13},
    {cpu::x86::kR14, &kvm_regs::r14}, {cpu::x86::kR15, &kvm_regs::r15},
};

struct SegmentSlot {
  cpu::x86::Segment segment;
  kvm_segment kvm_sregs::*field;
};
constexpr SegmentSlot kSegmentSlots[] = {
    {cpu::x86::kEs, &kvm_sregs::es}, {cpu::x86::kCs, &kvm_sregs::cs},
    {cpu::x86::kSs, &kvm_sregs::ss}, {cpu::x86::kDs, &kvm_sregs::ds},
    {cpu::x86::kFs, &kvm_sregs::fs}, {cpu::x86::kGs, &kvm_sregs::gs},
};

// MsrState's scalar fields among kStateMsrs, in order; the MTRR arrays follow them.
constexpr uint64_t cpu::x86::MsrState::*kMsrFields[] = {
    &cpu::x86::MsrState::sysenter_cs,  &cpu::x86::MsrState::sysenter_esp,
    &cpu::x86::MsrState::sysenter_eip, &cpu::x86::MsrState::star,
    &cpu::x86::MsrState::lstar,        &cpu::x86::MsrState::cstar,
    &cpu::x86::MsrState::sfmask,       &cpu::x86::MsrState::kernel_gs_base,
    &cpu::x86::MsrState::tsc_aux,      &cpu::x86::MsrState::pat,
    &cpu::x86::MsrState::misc_enable,  &cpu::x86::MsrState::mtrr_default_type,
};
constexpr size_t kFixedMtrrsAt = std::size(kMsrFields);
constexpr size_t kVariableMtrrsAt = kFixedMtrrsAt + std::tuple_size_v<decltype(cpu::x86::MsrState::mtrr_fixed)>;
static_assert(kVariableMtrrsAt + std::tuple_size_v<decltype(cpu::x86::MsrState::mtrr_variable)> ==
              kStateMsrs.size());

}  // namespace

namespace {

// The field of kStateMsrs[index] in `msrs` (const or not).
template <typename Msrs>
auto& msr_field(Msrs& msrs, size_t index) {
  if (index < kFixedMtrrsAt) return msrs.*kMsrFields[index];
  if (index < kVariableMtrrsAt) return msrs.mtrr_fixed[index - kFixedMtrrsAt];
  return msrs.mtrr_variable[index - kVariableMtrrsAt];
}

}  // namespace

uint64_t& state_msr(cpu::x86::MsrState& msrs, size_t index) { return msr_field(msrs, index); }
uint64_t state_msr(const cpu::x86::MsrState& msrs, size_t index) { return msr_field(msrs, index); }

kvm_segment to_kvm_segment(const SegmentCache& segment) {
  const uint16_t a = segment.attributes;
  kvm_segment result{};
  result.base = segment.base;
  result.limit = segment.limit;
  result.selector = segment.selector;
  result.type = a & 0xf;
  result.s = (a >> 4) & 1;
  result.dpl = (a >> 5) & 3;
  result.present = (a >> 7) & 1;
  result.avl = (a >> 12) & 1;
  result.l = (a >> 13) & 1;
  result.db = (a >> 14) & 1;
  result.g = (a >> 15) & 1;
  // VMX calls a segment register without a usable descriptor "unusable" (SDM Vol. 3C 24.4.1).
  result.unusable = result.present ? 0 : 1;
  return result;
}

SegmentCache from_kvm_segment(const kvm_segment& segment) {
  const bool present = segment.present != 0 && segment.unusable == 0;
  const uint16_t attributes = static_cast<uint16_t>(
      (segment.type & 0xf) | ((segment.s & 1) << 4) | ((segment.dpl & 3) << 5) |
      (present ? 0x80 : 0) | ((segment.avl & 1) << 12) | ((segment.l & 1) << 13) |
      ((segment.db & 1) << 14) | ((segment.g & 1) << 15));
  return SegmentCache{segment.selector, segment.base, segment.limit, attributes};
}

KvmCpuState to_kvm(const CpuState& state, uint64_t tsc_base) {
  KvmCpuState result;
  for (const GprSlot& slot : kGprSlots) result.regs.*slot.field = state.gpr[slot.gpr];
  result.regs.rip = state.rip;
  result.regs.rflags = state.read_rflags();

  for (const SegmentSlot& slot : kSegmentSlots)
    result.sregs.*slot.field = to_kvm_segment(state.segment[slot.segment]);
  result.sregs.tr = to_kvm_segment(state.tr);
  result.sregs.ldt = to_kvm_segment(state.ldtr);
  result.sregs.gdt = {state.gdtr.base, state.gdtr.limit, {}};
  result.sregs.idt = {state.idtr.base, state.idtr.limit, {}};
  result.sregs.cr0 = state.cr0;
  result.sregs.cr2 = state.cr2;
  result.sregs.cr3 = state.cr3;
  result.sregs.cr4 = state.cr4;
  result.sregs.cr8 = state.cr8;
  result.sregs.efer = state.msr.efer;

  for (size_t i = 0; i < 4; ++i) result.debug.db[i] = state.dr[i];
  result.debug.dr6 = state.dr[6];
  result.debug.dr7 = state.dr[7];

  // FXSAVE image (SDM Vol. 1 table 10-2): ST(i) in stack order, each in a 16-byte slot (8 bytes
  // significand, 2 bytes sign and exponent); the abridged tag per physical register.
  const cpu::x86::SimdState& simd = state.simd;
  const unsigned top = (simd.status >> 11) & 7;
  for (unsigned i = 0; i < 8; ++i) {
    const cpu::x86::X87Register& reg = simd.x87[(top + i) & 7];
    std::memcpy(&result.fpu.fpr[i][0], &reg.significand, 8);
    std::memcpy(&result.fpu.fpr[i][8], &reg.sign_exponent, 2);
  }
  result.fpu.fcw = simd.control;
  result.fpu.fsw = simd.status;
  result.fpu.ftwx = simd.tag_valid;
  result.fpu.last_opcode = simd.last_opcode;
  result.fpu.last_ip = simd.last_instruction;
  result.fpu.last_dp = simd.last_data;
  for (size_t i = 0; i < 16; ++i) std::memcpy(result.fpu.xmm[i], simd.xmm[i].bytes.data(), 16);
  result.fpu.mxcsr = simd.mxcsr;

  for (size_t i = 0; i < kStateMsrs.size(); ++i) result.msrs[i] = state_msr(state.msr, i);
  result.tsc = tsc_base + state.msr.tsc_offset;
  result.xcrs.nr_xcrs = 1;
  result.xcrs.xcrs[0] = {0, 0, state.extended_simd.xcr0};
  result.ymm_high = state.extended_simd.ymm_high;

  // api.rst 4.31 KVM_SET_VCPU_EVENTS. A MOV SS shadow also holds #DB; an STI shadow only
  // interrupts. No SIPI vector (it is KVM's in-kernel APIC's) and no SMM.
  kvm_vcpu_events& events = result.events;
  const cpu::x86::PendingEvents& pending = state.pending_events;
  events.flags = KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_NMI_PENDING;
  events.interrupt.shadow = state.debug_shadow       ? KVM_X86_SHADOW_INT_MOV_SS
                            : state.interrupt_shadow ? KVM_X86_SHADOW_INT_STI
                                                     : 0;
  events.exception.injected = pending.exception ? 1 : 0;
  events.exception.nr = pending.exception_vector;
  events.exception.has_error_code = pending.exception_has_error_code ? 1 : 0;
  events.exception.error_code = pending.exception_error_code;
  events.interrupt.injected = pending.interrupt ? 1 : 0;
  events.interrupt.nr = pending.interrupt_vector;
  events.nmi.pending = pending.nmi ? 1 : 0;
  events.nmi.masked = state.nmi_blocked ? 1 : 0;
  return result;
}

CpuState from_kvm(const KvmCpuState& kvm, uint64_t tsc_base,
                  const cpu::x86::MsrState& other_msrs) {
  CpuState state;
  state.msr = other_msrs;
  for (const GprSlot& slot : kGprSlots) state.gpr[slot.gpr] = kvm.regs.*slot.field;
  state.rip = kvm.regs.rip;
  state.write_rflags(kvm.regs.rflags);

  for (const SegmentSlot& slot : kSegmentSlots)
    state.segment[slot.segment] = from_kvm_segment(kvm.sregs.*slot.field);
  state.tr = from_kvm_segment(kvm.sregs.tr);
  state.ldtr = from_kvm_segment(kvm.sregs.ldt);
  state.gdtr = {kvm.sregs.gdt.base, kvm.sregs.gdt.limit};
  state.idtr = {kvm.sregs.idt.base, kvm.sregs.idt.limit};
  state.cr0 = kvm.sregs.cr0;
  state.cr2 = kvm.sregs.cr2;
  state.cr3 = kvm.sregs.cr3;
  state.cr4 = kvm.sregs.cr4;
  state.cr8 = kvm.sregs.cr8;
  state.msr.efer = kvm.sregs.efer;
  // The CPL is the DPL of SS (SDM Vol. 3A 5.5; equal to CS's except in conforming code).
  state.cpl = (state.cr0 & cpu::x86::cr0::kPe) == 0         ? 0
              : (state.rflags & cpu::x86::rflags::kVm) != 0 ? 3
                                                            : state.segment[cpu::x86::kSs].dpl();

  for (size_t i = 0; i < 4; ++i) state.dr[i] = kvm.debug.db[i];
  state.dr[6] = kvm.debug.dr6;
  state.dr[7] = kvm.debug.dr7;

  cpu::x86::SimdState& simd = state.simd;
  simd.control = kvm.fpu.fcw;
  simd.status = kvm.fpu.fsw;
  simd.tag_valid = kvm.fpu.ftwx;
  simd.last_opcode = kvm.fpu.last_opcode;
  simd.last_instruction = kvm.fpu.last_ip;
  simd.last_data = kvm.fpu.last_dp;
  const unsigned top = (simd.status >> 11) & 7;
  for (unsigned i = 0; i < 8; ++i) {
    cpu::x86::X87Register& reg = simd.x87[(top + i) & 7];
    std::memcpy(&reg.significand, &kvm.fpu.fpr[i][0], 8);
    std::memcpy(&reg.sign_exponent, &kvm.fpu.fpr[i][8], 2);
  }
  for (size_t i = 0; i < 16; ++i) std::memcpy(simd.xmm[i].bytes.data(), kvm.fpu.xmm[i], 16);
  simd.mxcsr = kvm.fpu.mxcsr;

  for (size_t i = 0; i < kStateMsrs.size(); ++i) state_msr(state.msr, i) = kvm.msrs[i];
  state.msr.tsc_offset = kvm.tsc - tsc_base;
  for (uint32_t i = 0; i < kvm.xcrs.nr_xcrs && i < KVM_MAX_XCRS; ++i) {
    if (kvm.xcrs.xcrs[i].xcr == 0) state.extended_simd.xcr0 = kvm.xcrs.xcrs[i].value;
  }
  state.extended_simd.ymm_high = kvm.ymm_high;

  const kvm_vcpu_events& events = kvm.events;
  state.interrupt_shadow = events.interrupt.shadow != 0;
  state.debug_shadow = (events.interrupt.shadow & KVM_X86_SHADOW_INT_MOV_SS) != 0;
  state.nmi_blocked = events.nmi.masked != 0;
  cpu::x86::PendingEvents& pending = state.pending_events;
  // Without KVM_CAP_EXCEPTION_PAYLOAD `injected` covers a pending exception too.
  pending.exception = events.exception.injected != 0 || events.exception.pending != 0;
  pending.exception_vector = pending.exception ? events.exception.nr : 0;
  pending.exception_has_error_code = pending.exception && events.exception.has_error_code != 0;
  pending.exception_error_code = pending.exception_has_error_code ? events.exception.error_code : 0;
  // A software interrupt (INT n) whose delivery was cut short is dropped: RIP is still at the
  // instruction, which runs again (KVM re-injects it with an instruction length it does not
  // report).
  pending.interrupt = events.interrupt.injected != 0 && events.interrupt.soft == 0;
  pending.interrupt_vector = pending.interrupt ? events.interrupt.nr : 0;
  // An NMI KVM was delivering or holds: delivered once NMIs are unblocked.
  pending.nmi = events.nmi.injected != 0 || events.nmi.pending != 0;
  state.halted = false;
  return state;
}

void store_xsave(const KvmCpuState& state, std::span<std::byte> area) {
  std::memcpy(area.data() + kXsaveMxcsrOffset, &state.fpu.mxcsr, 4);
  // XRSTOR loads MXCSR when XSTATE_BV has SSE (bit 1) or AVX, and a component whose bit is
  // clear to its initial state, zeros (SDM Vol. 1 13.8.1).
  uint64_t state_bitmap = 0;
  std::memcpy(&state_bitmap, area.data() + kXsaveStateBitmapOffset, 8);
  state_bitmap |= 2;
  // AVX's bit only when its registers are not all zero (its initial state): a host without
  // AVX refuses the bit.
  state_bitmap &= ~kXcr0Avx;
  if (state.ymm_high != decltype(state.ymm_high){} &&
      area.size() >= kXsaveAvxOffset + kXsaveAvxBytes) {
    std::memcpy(area.data() + kXsaveAvxOffset, state.ymm_high.data(), kXsaveAvxBytes);
    state_bitmap |= kXcr0Avx;
  }
  std::memcpy(area.data() + kXsaveStateBitmapOffset, &state_bitmap, 8);
}

void load_xsave(std::span<const std::byte> area, KvmCpuState& state) {
  std::memcpy(&state.fpu.mxcsr, area.data() + kXsaveMxcsrOffset, 4);
  uint64_t state_bitmap = 0;
  std::memcpy(&state_bitmap, area.data() + kXsaveStateBitmapOffset, 8);
  state.ymm_high = {};
  if ((state_bitmap & kXcr0Avx) != 0 && area.size() >= kXsaveAvxOffset + kXsaveAvxBytes) {
    std::memcpy(state.ymm_high.data(), area.data() + kXsaveAvxOffset, kXsaveAvxBytes);
  }
}

}  // namespace lamina::accel::kvm
