#include "accel/kvm_state.h"

#include <cstring>

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

// MsrState fields in kStateMsrs order.
constexpr uint64_t cpu::x86::MsrState::*kMsrFields[] = {
    &cpu::x86::MsrState::sysenter_cs,  &cpu::x86::MsrState::sysenter_esp,
    &cpu::x86::MsrState::sysenter_eip, &cpu::x86::MsrState::star,
    &cpu::x86::MsrState::lstar,        &cpu::x86::MsrState::cstar,
    &cpu::x86::MsrState::sfmask,       &cpu::x86::MsrState::kernel_gs_base,
    &cpu::x86::MsrState::tsc_aux,
};
static_assert(std::size(kMsrFields) == kStateMsrs.size());


}  // namespace

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

KvmCpuState to_kvm(const CpuState& state) {
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

  for (size_t i = 0; i < kStateMsrs.size(); ++i) result.msrs[i] = state.msr.*kMsrFields[i];
  result.interrupt_shadow = state.interrupt_shadow || state.debug_shadow;
  result.mov_ss_shadow = state.debug_shadow;
  result.nmi_masked = state.nmi_blocked;
  return result;
}

CpuState from_kvm(const KvmCpuState& kvm) {
  CpuState state;
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

  for (size_t i = 0; i < kStateMsrs.size(); ++i) state.msr.*kMsrFields[i] = kvm.msrs[i];
  state.interrupt_shadow = kvm.interrupt_shadow;
  state.debug_shadow = kvm.interrupt_shadow && kvm.mov_ss_shadow;
  state.nmi_blocked = kvm.nmi_masked;
  state.halted = false;
  return state;
}

}  // namespace lamina::accel::kvm
