// CpuState <-> KVM register blocks: segment attribute packing (SDM Vol. 3A figure 3-8) and the
// x87 stack order of the FXSAVE image, checked against hand-computed values.
#include <gtest/gtest.h>

#include <cstring>

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
  const KvmCpuState kvm = to_kvm(state);
  uint16_t exponent0 = 0, exponent1 = 0;
  std::memcpy(&exponent0, &kvm.fpu.fpr[0][8], 2);
  std::memcpy(&exponent1, &kvm.fpu.fpr[1][8], 2);
  EXPECT_EQ(exponent0, 0x3fff);
  EXPECT_EQ(exponent1, 0x4000);
  EXPECT_EQ(kvm.fpu.fpr[1][7], 0xc0);
  EXPECT_EQ(kvm.fpu.ftwx, 0x60);  // the abridged tag stays per physical register
  const cpu::x86::CpuState back = from_kvm(kvm);
  EXPECT_EQ(back.simd.x87, state.simd.x87);
  EXPECT_EQ(back.simd.status, state.simd.status);
}

// A MOV SS shadow also holds #DB (KVM_X86_SHADOW_INT_MOV_SS); an STI shadow only interrupts.
TEST(KvmState, InterruptShadowsKeepTheirKind) {
  cpu::x86::CpuState state;
  state.interrupt_shadow = true;
  KvmCpuState kvm = to_kvm(state);
  EXPECT_TRUE(kvm.interrupt_shadow);
  EXPECT_FALSE(kvm.mov_ss_shadow);
  EXPECT_FALSE(from_kvm(kvm).debug_shadow);
  state.debug_shadow = true;
  kvm = to_kvm(state);
  EXPECT_TRUE(kvm.mov_ss_shadow);
  const cpu::x86::CpuState back = from_kvm(kvm);
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
  const KvmCpuState kvm = to_kvm(state);
  EXPECT_EQ(kvm.regs.rcx, 0x2222u);  // encoding order: rax, rcx, rdx, rbx
  EXPECT_EQ(kvm.regs.rbx, 0x4444u);
  EXPECT_EQ(kvm.regs.rflags, 0x247u);
  EXPECT_EQ(kvm.msrs[4], 0xffffffff81a00000u);  // LSTAR is the fifth of kStateMsrs
  EXPECT_EQ(kvm.msrs[0], 0x10u);
  const cpu::x86::CpuState back = from_kvm(kvm);
  EXPECT_EQ(back.gpr, state.gpr);
  EXPECT_EQ(back.read_rflags(), 0x247u);
  EXPECT_EQ(back.msr.efer, state.msr.efer);
  EXPECT_EQ(back.tr.base, state.tr.base);
  EXPECT_EQ(back.cpl, 3);  // SS.DPL in protected mode
  EXPECT_EQ(back.msr.lstar, state.msr.lstar);
}

}  // namespace
}  // namespace lamina::accel::kvm
