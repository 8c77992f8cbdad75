#include "cpu/x86/system/segment_checks.h"

#include <gtest/gtest.h>

#include "descriptor_builder.h"

namespace lamina::cpu::x86 {
namespace {

using test_support::descriptor;
using test_support::gate;

constexpr uint8_t kGp = 13, kNp = 11, kSs = 12, kTs = 10;

uint64_t code(uint8_t dpl, bool conforming = false, bool present = true, bool l = false,
              bool db = true) {
  return descriptor(0, 0xfffff, conforming ? 0xe : 0xa, true, dpl, present, l, db, true);
}
uint64_t code64(uint8_t dpl, bool conforming = false, bool present = true) {
  return code(dpl, conforming, present, true, false);
}
uint64_t execute_only(uint8_t dpl) { return descriptor(0, 0xfffff, 0x8, true, dpl, true); }
uint64_t data(uint8_t dpl, bool writable = true, bool present = true) {
  return descriptor(0x1000, 0xfffff, writable ? 0x2 : 0x0, true, dpl, present, false, true, true);
}
uint64_t tss(bool busy, uint8_t dpl = 0, bool present = true) {
  return descriptor(0x5000, 0x67, busy ? 0xb : 0x9, false, dpl, present);
}

Fault fault(uint8_t vector, uint32_t code) { return Fault{vector, code}; }

TEST(DataSegmentLoad, NullLoadsUnusableRegister) {
  auto result = check_data_segment_load(0x0003, std::nullopt, 3);
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->null);
  EXPECT_EQ(result->selector, 3);
  // LDT index 0 is not null: its descriptor is checked.
  EXPECT_EQ(check_data_segment_load(0x0004, std::nullopt, 0).error(), fault(kGp, 0x4));
}

TEST(DataSegmentLoad, PrivilegeAndTypeRules) {
  EXPECT_EQ(check_data_segment_load(0x2b, data(3), 3)->descriptor.base, 0x1000u);
  EXPECT_TRUE(check_data_segment_load(0x18, data(3), 0).has_value());              // DPL >= CPL
  EXPECT_EQ(check_data_segment_load(0x18, data(0), 3).error(), fault(kGp, 0x18));  // CPL > DPL
  EXPECT_EQ(check_data_segment_load(0x1b, data(2), 0).error(), fault(kGp, 0x18));  // RPL > DPL
  EXPECT_TRUE(check_data_segment_load(0x1a, data(2), 2).has_value());
  // Readable code works like data; conforming readable code skips the privilege check.
  EXPECT_TRUE(check_data_segment_load(0x10, code(0), 0).has_value());
  EXPECT_EQ(check_data_segment_load(0x13, code(0), 3).error(), fault(kGp, 0x10));
  EXPECT_TRUE(check_data_segment_load(0x13, code(0, true), 3).has_value());
  EXPECT_EQ(check_data_segment_load(0x10, execute_only(0), 0).error(), fault(kGp, 0x10));
  EXPECT_EQ(check_data_segment_load(0x10, tss(false), 0).error(), fault(kGp, 0x10));
  EXPECT_EQ(check_data_segment_load(0x10, std::nullopt, 0).error(), fault(kGp, 0x10));
  EXPECT_EQ(check_data_segment_load(0x10, data(0, true, false), 0).error(), fault(kNp, 0x10));
}

TEST(StackSegmentLoad, Rules) {
  EXPECT_TRUE(check_stack_segment_load(0x18, data(0), 0, false).has_value());
  EXPECT_EQ(check_stack_segment_load(0x1b, data(0), 0, false).error(), fault(kGp, 0x18));
  EXPECT_EQ(check_stack_segment_load(0x1b, data(3), 0, false).error(), fault(kGp, 0x18));
  EXPECT_EQ(check_stack_segment_load(0x18, data(0, false), 0, false).error(), fault(kGp, 0x18));
  EXPECT_EQ(check_stack_segment_load(0x18, code(0), 0, false).error(), fault(kGp, 0x18));
  EXPECT_EQ(check_stack_segment_load(0x18, data(0, true, false), 0, false).error(),
            fault(kSs, 0x18));
  EXPECT_EQ(check_stack_segment_load(0x18, std::nullopt, 0, false).error(), fault(kGp, 0x18));
  // Null: #GP(0) outside 64-bit mode; in 64-bit mode allowed for CPL < 3 with RPL = CPL.
  EXPECT_EQ(check_stack_segment_load(0, std::nullopt, 0, false).error(), fault(kGp, 0));
  auto null64 = check_stack_segment_load(0, std::nullopt, 0, true);
  ASSERT_TRUE(null64.has_value());
  EXPECT_TRUE(null64->null);
  EXPECT_EQ(check_stack_segment_load(1, std::nullopt, 0, true).error(), fault(kGp, 0));
  EXPECT_EQ(check_stack_segment_load(3, std::nullopt, 3, true).error(), fault(kGp, 0));
}

TEST(FarTransfer, CodeSegments) {
  auto same = check_far_transfer(FarTransfer::kJump, 0x10, code(0), 0, false);
  ASSERT_TRUE(same.has_value());
  EXPECT_EQ(same->kind, FarTargetKind::kCodeSegment);
  EXPECT_EQ(same->code.selector, 0x10);
  // Non-conforming: DPL must equal CPL and RPL <= CPL; the loaded RPL becomes CPL.
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x10, code(0), 3, false).error(),
            fault(kGp, 0x10));
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x13, code(0), 0, false).error(),
            fault(kGp, 0x10));
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x10, code(3), 0, false).error(),
            fault(kGp, 0x10));
  // Conforming: DPL <= CPL, CPL unchanged, RPL ignored.
  auto conforming = check_far_transfer(FarTransfer::kJump, 0x10, code(0, true), 3, false);
  ASSERT_TRUE(conforming.has_value());
  EXPECT_EQ(conforming->code.selector, 0x13);
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x10, code(3, true), 2, false).error(),
            fault(kGp, 0x10));
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x10, code(0, false, false), 0, false).error(),
            fault(kNp, 0x10));
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0, std::nullopt, 0, false).error(),
            fault(kGp, 0));
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x18, data(0), 0, false).error(),
            fault(kGp, 0x18));
  // IA-32e mode: L = D = 1 is reserved.
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x10, code(0, false, true, true, true), 0, true)
                .error(),
            fault(kGp, 0x10));
  EXPECT_TRUE(check_far_transfer(FarTransfer::kJump, 0x10, code64(0), 0, true).has_value());
}

TEST(FarTransfer, GatesAndTss) {
  uint64_t call_gate = gate(0x1000, 0x08, 0xc, 3, true);
  auto through = check_far_transfer(FarTransfer::kCall, 0x23, call_gate, 3, false);
  ASSERT_TRUE(through.has_value());
  EXPECT_EQ(through->kind, FarTargetKind::kCallGate);
  // Gate DPL must be >= CPL and >= RPL.
  uint64_t kernel_gate = gate(0x1000, 0x08, 0xc, 0, true);
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x20, kernel_gate, 3, false).error(),
            fault(kGp, 0x20));
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x23, kernel_gate, 0, false).error(),
            fault(kGp, 0x20));
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x20, gate(0x1000, 8, 0xc, 0, false), 0, false)
                .error(),
            fault(kNp, 0x20));
  // 16-bit call gates and task switches do not exist in IA-32e mode.
  EXPECT_EQ(check_far_transfer(FarTransfer::kCall, 0x20, gate(0, 8, 0x4, 3, true), 0, true).error(),
            fault(kGp, 0x20));
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x28, tss(false), 0, true).error(),
            fault(kGp, 0x28));
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x28, tss(false), 0, false)->kind,
            FarTargetKind::kTss);
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x28, tss(true), 0, false).error(),
            fault(kGp, 0x28));
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x28, tss(false, 0, false), 0, false).error(),
            fault(kNp, 0x28));
  EXPECT_EQ(
      check_far_transfer(FarTransfer::kJump, 0x30, gate(0, 0x28, 0x5, 0, true), 0, false)->kind,
      FarTargetKind::kTaskGate);
  // An LDT descriptor or interrupt gate is no far-transfer target.
  uint64_t ldt = descriptor(0x6000, 0xff, 0x2, false, 0, true);
  EXPECT_EQ(check_far_transfer(FarTransfer::kJump, 0x38, ldt, 0, false).error(), fault(kGp, 0x38));
  EXPECT_EQ(
      check_far_transfer(FarTransfer::kCall, 0x40, gate(0, 8, 0xe, 3, true), 0, false).error(),
      fault(kGp, 0x40));
}

TEST(CallGateTarget, PrivilegeChanges) {
  auto inner = check_call_gate_target(FarTransfer::kCall, 0x08, code(0), 3, false);
  ASSERT_TRUE(inner.has_value());
  EXPECT_TRUE(inner->more_privileged);
  EXPECT_EQ(inner->new_cpl, 0);
  EXPECT_EQ(inner->code.selector, 0x08);
  // JMP through a gate cannot raise privilege to a non-conforming segment.
  EXPECT_EQ(check_call_gate_target(FarTransfer::kJump, 0x08, code(0), 3, false).error(),
            fault(kGp, 0x08));
  auto conforming = check_call_gate_target(FarTransfer::kJump, 0x08, code(0, true), 3, false);
  ASSERT_TRUE(conforming.has_value());
  EXPECT_EQ(conforming->new_cpl, 3);
  EXPECT_EQ(conforming->code.selector, 0x0b);
  EXPECT_EQ(check_call_gate_target(FarTransfer::kCall, 0x08, code(3), 0, false).error(),
            fault(kGp, 0x08));  // DPL > CPL
  EXPECT_EQ(check_call_gate_target(FarTransfer::kCall, 0x08, data(0), 3, false).error(),
            fault(kGp, 0x08));
  EXPECT_EQ(check_call_gate_target(FarTransfer::kCall, 0, std::nullopt, 3, false).error(),
            fault(kGp, 0));
  EXPECT_EQ(
      check_call_gate_target(FarTransfer::kCall, 0x08, code(0, false, false), 3, false).error(),
      fault(kNp, 0x08));
  // IA-32e: the target must be a 64-bit code segment.
  EXPECT_EQ(check_call_gate_target(FarTransfer::kCall, 0x08, code(0), 3, true).error(),
            fault(kGp, 0x08));
  EXPECT_TRUE(check_call_gate_target(FarTransfer::kCall, 0x08, code64(0), 3, true).has_value());
}

TEST(TaskGateTss, Rules) {
  EXPECT_TRUE(check_task_gate_tss(0x28, tss(false)).has_value());
  EXPECT_EQ(check_task_gate_tss(0x2c, tss(false)).error(), fault(kGp, 0x2c));  // in the LDT
  EXPECT_EQ(check_task_gate_tss(0x28, tss(true)).error(), fault(kGp, 0x28));
  EXPECT_EQ(check_task_gate_tss(0x28, tss(false, 0, false)).error(), fault(kNp, 0x28));
  EXPECT_EQ(check_task_gate_tss(0x28, std::nullopt).error(), fault(kGp, 0x28));
}

TEST(ReturnChecks, CodeSegment) {
  auto outer = check_return_code_segment(0x23, code(3), 0, false);
  ASSERT_TRUE(outer.has_value());
  EXPECT_TRUE(outer->outer);
  EXPECT_EQ(outer->new_cpl, 3);
  auto same = check_return_code_segment(0x10, code(0), 0, false);
  ASSERT_TRUE(same.has_value());
  EXPECT_FALSE(same->outer);
  EXPECT_EQ(check_return_code_segment(0x10, code(0), 3, false).error(),
            fault(kGp, 0x10));  // RPL<CPL
  EXPECT_EQ(check_return_code_segment(0x13, code(0), 0, false).error(),
            fault(kGp, 0x10));  // DPL!=RPL
  EXPECT_TRUE(check_return_code_segment(0x13, code(0, true), 0, false).has_value());
  EXPECT_EQ(check_return_code_segment(0x11, code(2, true), 0, false).error(), fault(kGp, 0x10));
  EXPECT_EQ(check_return_code_segment(0x10, data(0), 0, false).error(), fault(kGp, 0x10));
  EXPECT_EQ(check_return_code_segment(0, std::nullopt, 0, false).error(), fault(kGp, 0));
  EXPECT_EQ(check_return_code_segment(0x10, code(0, false, false), 0, false).error(),
            fault(kNp, 0x10));
  EXPECT_EQ(check_return_code_segment(0x10, code(0, false, true, true, true), 0, true).error(),
            fault(kGp, 0x10));
}

TEST(ReturnChecks, StackSegmentAndDataSegmentClearing) {
  EXPECT_TRUE(check_return_stack_segment(0x2b, data(3), 3, false).has_value());
  EXPECT_EQ(check_return_stack_segment(0x28, data(3), 3, false).error(), fault(kGp, 0x28));
  EXPECT_EQ(check_return_stack_segment(0x2b, data(0), 3, false).error(), fault(kGp, 0x28));
  EXPECT_EQ(check_return_stack_segment(0x2b, data(3, false), 3, false).error(), fault(kGp, 0x28));
  EXPECT_EQ(check_return_stack_segment(0x2b, data(3, true, false), 3, false).error(),
            fault(kSs, 0x28));
  EXPECT_EQ(check_return_stack_segment(0x3, std::nullopt, 3, true).error(), fault(kGp, 0));
  EXPECT_TRUE(check_return_stack_segment(0x1, std::nullopt, 1, true).has_value());
  EXPECT_EQ(check_return_stack_segment(0x1, std::nullopt, 1, false).error(), fault(kGp, 0));
  // A null SS returned to 64-bit mode still needs RPL = the new CPL, as MOV SS does.
  EXPECT_EQ(check_return_stack_segment(0x0, std::nullopt, 1, true).error(), fault(kGp, 0));
  LoadedSegment kernel_data{0x18, decode_segment_descriptor(data(0)), false};
  LoadedSegment user_data{0x2b, decode_segment_descriptor(data(3)), false};
  LoadedSegment conforming{0x10, decode_segment_descriptor(code(0, true)), false};
  EXPECT_TRUE(must_null_after_return(kernel_data, 3));
  EXPECT_FALSE(must_null_after_return(user_data, 3));
  EXPECT_FALSE(must_null_after_return(conforming, 3));
  EXPECT_FALSE(must_null_after_return(kernel_data, 0));
}

TEST(InterruptChecks, Gates) {
  uint64_t kernel_only = gate(0x1000, 0x08, 0xe, 0, true);
  EXPECT_TRUE(check_interrupt_gate(0x80, kernel_only, 0, false, 3, false, true).has_value());
  // INT n from CPL 3 through a DPL 0 gate: #GP(vector * 8 + 2).
  EXPECT_EQ(check_interrupt_gate(0x80, kernel_only, 0, true, 3, false, false).error(),
            fault(kGp, 0x80 * 8 + 2));
  EXPECT_TRUE(check_interrupt_gate(0x80, gate(0x1000, 8, 0xf, 3, true), 0, true, 3, false, false)
                  .has_value());
  EXPECT_EQ(
      check_interrupt_gate(0x20, gate(0x1000, 8, 0xe, 0, false), 0, false, 0, false, true).error(),
      fault(kNp, 0x20 * 8 + 3));
  // Call gates and non-gate types are invalid in the IDT.
  EXPECT_EQ(check_interrupt_gate(6, gate(0, 8, 0xc, 0, true), 0, false, 0, false, false).error(),
            fault(kGp, 6 * 8 + 2));
  EXPECT_EQ(check_interrupt_gate(6, code(0), 0, false, 0, false, false).error(),
            fault(kGp, 6 * 8 + 2));
  EXPECT_EQ(check_interrupt_gate(8, gate(0, 0x28, 0x5, 0, true), 0, false, 0, false, false)->kind,
            GateKind::kTask);
  EXPECT_FALSE(check_interrupt_gate(8, gate(0, 0x28, 0x5, 0, true), 0, false, 0, true, false));
  EXPECT_EQ(check_interrupt_gate(14, gate(0, 8, 0xe, 0, true, 2), 0, false, 0, true, false)->ist,
            2);
}

TEST(InterruptChecks, CodeAndStackSegments) {
  auto inner = check_interrupt_code_segment(0x08, code(0), 3, false, false);
  ASSERT_TRUE(inner.has_value());
  EXPECT_TRUE(inner->more_privileged);
  EXPECT_EQ(inner->new_cpl, 0);
  auto conforming = check_interrupt_code_segment(0x08, code(0, true), 3, false, false);
  ASSERT_TRUE(conforming.has_value());
  EXPECT_FALSE(conforming->more_privileged);
  EXPECT_EQ(conforming->new_cpl, 3);
  EXPECT_EQ(check_interrupt_code_segment(0x08, code(3), 0, false, true).error(), fault(kGp, 0x09));
  EXPECT_EQ(check_interrupt_code_segment(0, std::nullopt, 0, false, true).error(), fault(kGp, 1));
  EXPECT_EQ(check_interrupt_code_segment(0x08, code(0, false, false), 0, false, false).error(),
            fault(kNp, 0x08));
  EXPECT_EQ(check_interrupt_code_segment(0x08, code(0), 0, true, false).error(), fault(kGp, 0x08));
  // From virtual-8086 mode only a non-conforming DPL 0 handler will do (SDM 20.3.1.1).
  EXPECT_TRUE(check_interrupt_code_segment(0x08, code(0), 3, false, false, true).has_value());
  EXPECT_EQ(check_interrupt_code_segment(0x08, code(1), 3, false, false, true).error(),
            fault(kGp, 0x08));
  EXPECT_EQ(check_interrupt_code_segment(0x08, code(0, true), 3, false, true, true).error(),
            fault(kGp, 0x09));
  // The stack segment from the TSS: faults are #TS, absence is #SS.
  EXPECT_TRUE(check_inner_stack_segment(0x18, data(0), 0, false).has_value());
  EXPECT_EQ(check_inner_stack_segment(0, std::nullopt, 0, true).error(), fault(kTs, 1));
  EXPECT_EQ(check_inner_stack_segment(0x1b, data(0), 0, false).error(), fault(kTs, 0x18));
  EXPECT_EQ(check_inner_stack_segment(0x18, data(1), 0, false).error(), fault(kTs, 0x18));
  EXPECT_EQ(check_inner_stack_segment(0x18, data(0, false), 0, false).error(), fault(kTs, 0x18));
  EXPECT_EQ(check_inner_stack_segment(0x18, std::nullopt, 0, false).error(), fault(kTs, 0x18));
  EXPECT_EQ(check_inner_stack_segment(0x18, data(0, true, false), 0, true).error(),
            fault(kSs, 0x19));
}

TEST(SystemRegisterLoads, LtrAndLldt) {
  auto legacy = check_ltr(0x28, tss(false), 0, false);
  ASSERT_TRUE(legacy.has_value());
  EXPECT_EQ(legacy->descriptor.base, 0x5000u);
  EXPECT_EQ(check_ltr(0, std::nullopt, 0, false).error(), fault(kGp, 0));
  EXPECT_EQ(check_ltr(0x2c, tss(false), 0, false).error(), fault(kGp, 0x2c));
  EXPECT_EQ(check_ltr(0x28, tss(true), 0, false).error(), fault(kGp, 0x28));
  EXPECT_EQ(check_ltr(0x28, tss(false, 0, false), 0, false).error(), fault(kNp, 0x28));
  EXPECT_EQ(check_ltr(0x28, data(0), 0, false).error(), fault(kGp, 0x28));
  uint64_t tss16 = descriptor(0x5000, 0x2b, 0x1, false, 0, true);
  EXPECT_TRUE(check_ltr(0x28, tss16, 0, false).has_value());
  EXPECT_EQ(check_ltr(0x28, tss16, 0, true).error(), fault(kGp, 0x28));
  auto long_tss = check_ltr(0x40, tss(false), 0xffff8880, true);
  ASSERT_TRUE(long_tss.has_value());
  EXPECT_EQ(long_tss->descriptor.base, 0xffff888000005000u);
  EXPECT_EQ(check_ltr(0x40, tss(false), 0x00108880, true).error(),
            fault(kGp, 0x40));  // non-canonical
  uint64_t ldt = descriptor(0x6000, 0xff, 0x2, false, 0, true);
  EXPECT_TRUE(check_lldt(0, std::nullopt, 0, false)->null);
  EXPECT_EQ(check_lldt(0x30, ldt, 0, false)->descriptor.limit, 0xffu);
  EXPECT_EQ(check_lldt(0x30, tss(false), 0, false).error(), fault(kGp, 0x30));
  EXPECT_EQ(check_lldt(0x34, ldt, 0, false).error(), fault(kGp, 0x34));
  EXPECT_EQ(check_lldt(0x30, descriptor(0x6000, 0xff, 0x2, false, 0, false), 0, false).error(),
            fault(kNp, 0x30));
  EXPECT_EQ(check_lldt(0x30, ldt, uint64_t{1} << 40, true).error(), fault(kGp, 0x30));
  // IA-32e mode: the upper 8 bytes past the GDT limit are #GP(selector), not read as zero.
  EXPECT_EQ(check_ltr(0x40, tss(false), std::nullopt, true).error(), fault(kGp, 0x40));
  EXPECT_EQ(check_lldt(0x30, ldt, std::nullopt, true).error(), fault(kGp, 0x30));
  EXPECT_TRUE(check_lldt(0x30, ldt, std::nullopt, false).has_value());
}

}  // namespace
}  // namespace lamina::cpu::x86
