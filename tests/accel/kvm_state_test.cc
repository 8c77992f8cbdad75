// CpuState <-> KVM register blocks: segment attribute packing (SDM Vol. 3A figure 3-8) and the
// x87 stack order of the FXSAVE image, checked against hand-computed values.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "accel/kvm_state.h"

namespace lamina::accel::kvm {
namespace {

TEST(KvmState, SegmentAttributesUnpackToKvmFields) {
  // 64-bit code: G=1, L=1, P=1, DPL=0, S=1, type 0xb.
  const kvm_segment code = to_kvm_segment({0x08, 0, 0xffffffff, 0xa09b});
  EXPECT_EQ(code.type, 0xb);
  EXPECT_EQ(code.s, 1);
  EXPECT_EQ(code.dpl, 0);
  EXPECT_EQ(code.present, 1);
  EXPECT_EQ(code.l, 1);
  EXPECT_EQ(code.db, 0);
  EXPECT_EQ(code.g, 1);
  EXPECT_EQ(code.unusable, 0);
  EXPECT_EQ(code.limit, 0xffffffffu);
  // User data, DPL 3, D/B set, AVL set.
  const kvm_segment data = to_kvm_segment({0x2b, 0x1000, 0xfffff, 0x50f3});
  EXPECT_EQ(data.dpl, 3);
  EXPECT_EQ(data.db, 1);
  EXPECT_EQ(data.avl, 1);
  EXPECT_EQ(data.type, 0x3);
  EXPECT_EQ(data.base, 0x1000u);
  // A null selector in protected mode is not present: unusable for VMX.
  EXPECT_EQ(to_kvm_segment({0, 0, 0, 0}).unusable, 1);
  for (uint16_t attributes : {0xa09b, 0x50f3, 0x0093, 0x008b, 0x0082, 0xc09b}) {
    EXPECT_EQ(from_kvm_segment(to_kvm_segment({1, 2, 3, attributes})).attributes, attributes);
  }
}

TEST(KvmState, X87RegistersAreStoredInStackOrder) {
  cpu::x86::CpuState state;
  state.simd.status = 5u << 11;                      // TOP = 5
  state.simd.x87[5] = {0x8000000000000000, 0x3fff};  // ST(0) = 1.0
  state.simd.x87[6] = {0xc000000000000000, 0x4000};  // ST(1) = 3.0
  state.simd.tag_valid = 0x60;
  const KvmCpuState kvm = to_kvm(state, 0);
  uint16_t exponent0 = 0, exponent1 = 0;
  std::memcpy(&exponent0, &kvm.fpu.fpr[0][8], 2);
  std::memcpy(&exponent1, &kvm.fpu.fpr[1][8], 2);
  EXPECT_EQ(exponent0, 0x3fff);
  EXPECT_EQ(exponent1, 0x4000);
  EXPECT_EQ(kvm.fpu.fpr[1][7], 0xc0);
  EXPECT_EQ(kvm.fpu.ftwx, 0x60);  // the abridged tag stays per physical register
  const cpu::x86::CpuState back = from_kvm(kvm, 0, state.msr);
  EXPECT_EQ(back.simd.x87, state.simd.x87);
  EXPECT_EQ(back.simd.status, state.simd.status);
}

// A MOV SS shadow also holds #DB (KVM_X86_SHADOW_INT_MOV_SS); an STI shadow only interrupts.
TEST(KvmState, InterruptShadowsKeepTheirKind) {
  cpu::x86::CpuState state;
  state.interrupt_shadow = true;
  KvmCpuState kvm = to_kvm(state, 0);
  EXPECT_EQ(kvm.events.interrupt.shadow, KVM_X86_SHADOW_INT_STI);
  EXPECT_FALSE(from_kvm(kvm, 0, state.msr).debug_shadow);
  state.debug_shadow = true;
  kvm = to_kvm(state, 0);
  EXPECT_EQ(kvm.events.interrupt.shadow, KVM_X86_SHADOW_INT_MOV_SS);
  const cpu::x86::CpuState back = from_kvm(kvm, 0, state.msr);
  EXPECT_TRUE(back.interrupt_shadow);
  EXPECT_TRUE(back.debug_shadow);
}

TEST(KvmState, RegistersAndMsrsRoundTrip) {
  cpu::x86::CpuState state;
  for (size_t i = 0; i < 16; ++i) state.gpr[i] = 0x1111 * (i + 1);
  state.rip = 0xffffffff81000000;
  state.write_rflags(0x247);
  state.cr0 = 0x80050033;
  state.cr4 = 0x6f0;
  state.msr.efer = 0xd01;
  state.segment[cpu::x86::kSs] = {0x2b, 0, 0xffffffff, 0xc0f3};
  state.cr0 |= 1;
  state.msr.lstar = 0xffffffff81a00000;
  state.msr.sysenter_cs = 0x10;
  state.tr = {0x40, 0xfffffe0000003000, 0x4087, 0x8b};
  const KvmCpuState kvm = to_kvm(state, 0);
  EXPECT_EQ(kvm.regs.rcx, 0x2222u);  // encoding order: rax, rcx, rdx, rbx
  EXPECT_EQ(kvm.regs.rbx, 0x4444u);
  EXPECT_EQ(kvm.regs.rflags, 0x247u);
  EXPECT_EQ(kvm.msrs[4], 0xffffffff81a00000u);  // LSTAR is the fifth of kStateMsrs
  EXPECT_EQ(kvm.msrs[0], 0x10u);
  const cpu::x86::CpuState back = from_kvm(kvm, 0, cpu::x86::MsrState{});
  EXPECT_EQ(back.gpr, state.gpr);
  EXPECT_EQ(back.read_rflags(), 0x247u);
  EXPECT_EQ(back.msr.efer, state.msr.efer);
  EXPECT_EQ(back.tr.base, state.tr.base);
  EXPECT_EQ(back.cpl, 3);  // SS.DPL in protected mode
  EXPECT_EQ(back.msr.lstar, state.msr.lstar);
}

// Every MSR KVM keeps, the TSC as an offset from the machine's TSC base, XCR0/AVX and the
// pending events: a state converted to KVM's blocks and back is the same state, and the
// MsrState fields KVM has no place for come from the caller's copy.
cpu::x86::CpuState full_state() {
  cpu::x86::CpuState state;
  state.msr.pat = 0x0007010600070106;
  state.msr.misc_enable = 0x851;
  state.msr.mtrr_default_type = 0xc06;
  for (size_t i = 0; i < state.msr.mtrr_fixed.size(); ++i) state.msr.mtrr_fixed[i] = 0x0606060606060606 + i;
  for (size_t i = 0; i < state.msr.mtrr_variable.size(); ++i) state.msr.mtrr_variable[i] = 0x1000 * (i + 1) | 6;
  state.msr.tsc_aux = 7;
  state.msr.tsc_offset = 123456789;
  state.msr.amd_hwcr = 0x1000000;  // not KVM's: from the caller
  state.msr.perf_counter[2] = 99;
  state.extended_simd.xcr0 = 7;
  for (size_t i = 0; i < 16; ++i) state.extended_simd.ymm_high[i].fill(static_cast<uint8_t>(0x10 + i));
  state.simd.mxcsr = 0x1f80 | 0x6000;  // round toward zero
  state.pending_events.exception = true;
  state.pending_events.exception_vector = 14;
  state.pending_events.exception_has_error_code = true;
  state.pending_events.exception_error_code = 0x6;
  state.pending_events.interrupt = true;
  state.pending_events.interrupt_vector = 0x31;
  state.pending_events.nmi = true;
  state.nmi_blocked = true;
  return state;
}

TEST(KvmState, EveryNewFieldRoundTrips) {
  const cpu::x86::CpuState state = full_state();
  const uint64_t base = 5'000'000;
  const KvmCpuState kvm = to_kvm(state, base);
  EXPECT_EQ(kvm.tsc, base + 123456789);  // what the guest reads: base + offset
  EXPECT_EQ(kvm.msrs[9], state.msr.pat);  // PAT follows the nine system-call MSRs
  EXPECT_EQ(kvm.xcrs.nr_xcrs, 1u);
  EXPECT_EQ(kvm.xcrs.xcrs[0].value, 7u);
  EXPECT_EQ(kvm.events.exception.injected, 1);
  EXPECT_EQ(kvm.events.exception.nr, 14);
  EXPECT_EQ(kvm.events.exception.error_code, 6u);
  EXPECT_EQ(kvm.events.interrupt.injected, 1);
  EXPECT_EQ(kvm.events.interrupt.nr, 0x31);
  EXPECT_EQ(kvm.events.nmi.pending, 1);
  EXPECT_EQ(kvm.events.nmi.masked, 1);
  EXPECT_NE(kvm.events.flags & KVM_VCPUEVENT_VALID_NMI_PENDING, 0u);

  // The caller's copy supplies only what KVM lacks; everything KVM has comes from `kvm`.
  cpu::x86::MsrState other = state.msr;
  for (size_t i = 0; i < kStateMsrs.size(); ++i) state_msr(other, i) = 0;
  other.tsc_offset = 0;
  // Read later, when the base has moved on, the TSC has too: the offset stays.
  KvmCpuState later = kvm;
  later.tsc += 1000;
  const cpu::x86::CpuState back = from_kvm(later, base + 1000, other);
  EXPECT_EQ(back.msr, state.msr);
  EXPECT_EQ(back.extended_simd, state.extended_simd);
  EXPECT_EQ(back.pending_events, state.pending_events);
  EXPECT_TRUE(back.nmi_blocked);
}

// MXCSR and the AVX halves through the XSAVE area; a zero AVX state is its initial state, so
// XSTATE_BV's AVX bit goes (a host without AVX refuses the bit).
TEST(KvmState, XsaveAreaCarriesMxcsrAndAvx) {
  const KvmCpuState kvm = to_kvm(full_state(), 0);
  std::vector<std::byte> area(4096);
  store_xsave(kvm, area);
  uint64_t bitmap = 0;
  std::memcpy(&bitmap, area.data() + kXsaveStateBitmapOffset, 8);
  EXPECT_EQ(bitmap, 6u);
  EXPECT_EQ(static_cast<uint8_t>(area[kXsaveAvxOffset + 16 * 3]), 0x13);
  KvmCpuState back;
  load_xsave(area, back);
  EXPECT_EQ(back.fpu.mxcsr, kvm.fpu.mxcsr);
  EXPECT_EQ(back.ymm_high, kvm.ymm_high);

  KvmCpuState zero = kvm;
  zero.ymm_high = {};
  store_xsave(zero, area);
  std::memcpy(&bitmap, area.data() + kXsaveStateBitmapOffset, 8);
  EXPECT_EQ(bitmap, 2u);
  load_xsave(area, back);
  EXPECT_EQ(back.ymm_high, zero.ymm_high);
  // An area too small for AVX (KVM_GET_XSAVE on a host without it) carries MXCSR alone.
  std::vector<std::byte> small(kXsaveAvxOffset);
  store_xsave(kvm, small);
  std::memcpy(&bitmap, small.data() + kXsaveStateBitmapOffset, 8);
  EXPECT_EQ(bitmap, 2u);
}

// KVM's other event forms: a pending (not yet injected) exception with the payload capability,
// an injected NMI, and a software interrupt cut short, which is dropped because RIP is still at
// the INT instruction.
TEST(KvmState, KvmEventFormsBecomePendingEvents) {
  KvmCpuState kvm = to_kvm(cpu::x86::CpuState{}, 0);
  kvm.events.exception.pending = 1;
  kvm.events.exception.nr = 13;
  kvm.events.exception.has_error_code = 1;
  kvm.events.exception.error_code = 0x18;
  kvm.events.nmi.injected = 1;
  kvm.events.interrupt.injected = 1;
  kvm.events.interrupt.soft = 1;
  kvm.events.interrupt.nr = 0x80;
  const cpu::x86::PendingEvents events = from_kvm(kvm, 0, {}).pending_events;
  EXPECT_TRUE(events.exception);
  EXPECT_EQ(events.exception_vector, 13);
  EXPECT_EQ(events.exception_error_code, 0x18u);
  EXPECT_TRUE(events.nmi);
  EXPECT_FALSE(events.interrupt);
}

TEST(KvmState, StateMsrSlotsAreDistinct) {
  cpu::x86::MsrState msrs;
  for (size_t i = 0; i < kStateMsrs.size(); ++i) state_msr(msrs, i) = 1000 + i;
  for (size_t i = 0; i < kStateMsrs.size(); ++i) EXPECT_EQ(state_msr(msrs, i), 1000 + i) << i;
  EXPECT_EQ(msrs.mtrr_fixed[0], 1000 + 12);  // 0x250 follows MTRR_DEF_TYPE
  EXPECT_EQ(msrs.mtrr_variable[15], 1000 + kStateMsrs.size() - 1);
}

}  // namespace
}  // namespace lamina::accel::kvm
