#include "cpu/x86/system/task_state.h"

#include <gtest/gtest.h>

#include <array>

#include "descriptor_builder.h"

namespace lamina::cpu::x86 {
namespace {

using test_support::descriptor;

constexpr uint8_t kNp = 11, kSs = 12, kTs = 10;
Fault fault(uint8_t vector, uint32_t code) { return Fault{vector, code}; }

uint64_t tss32(bool busy, uint32_t limit = 0x67, bool present = true) {
  return descriptor(0x5000, limit, busy ? 0xb : 0x9, false, 0, present);
}
uint64_t tss16(bool busy, uint32_t limit = 0x2b) {
  return descriptor(0x6000, limit, busy ? 0x3 : 0x1, false, 0, true);
}
uint64_t code(uint8_t dpl, bool conforming = false, bool present = true) {
  return descriptor(0, 0xfffff, conforming ? 0xe : 0xa, true, dpl, present, false, true, true);
}
uint64_t data(uint8_t dpl, bool writable = true, bool present = true) {
  return descriptor(0, 0xfffff, writable ? 0x2 : 0x0, true, dpl, present, false, true, true);
}

void put32(std::span<uint8_t> image, uint32_t offset, uint32_t value) {
  for (int i = 0; i < 4; ++i) image[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

TEST(TaskImage, ThirtyTwoBitLayoutFollowsFigure7_2) {
  std::array<uint8_t, 104> image{};
  put32(image, 0x00, 0x18);
  put32(image, 0x1c, 0x12'3000);
  put32(image, 0x20, 0x40'1000);
  put32(image, 0x24, 0x202);
  for (uint32_t i = 0; i < 8; ++i) put32(image, 0x28 + 4 * i, 0x100 + i);
  for (uint32_t i = 0; i < 6; ++i) put32(image, 0x48 + 4 * i, 0xffff'0008 + 8 * i);
  put32(image, 0x60, 0x28);
  put32(image, 0x64, 1);
  const TaskImage task = decode_task_image(image, true);
  EXPECT_EQ(task.back_link, 0x18);
  EXPECT_EQ(task.cr3, 0x12'3000u);
  EXPECT_EQ(task.eip, 0x40'1000u);
  EXPECT_EQ(task.eflags, 0x202u);
  EXPECT_EQ(task.gpr[4], 0x104u);      // ESP
  EXPECT_EQ(task.segment[1], 0x10);    // CS; the reserved upper word is not part of it
  EXPECT_EQ(task.segment[5], 0x30);    // GS
  EXPECT_EQ(task.ldt, 0x28);
  EXPECT_TRUE(task.debug_trap);
}

TEST(TaskImage, SixteenBitLayoutFollowsFigure7_11) {
  std::array<uint8_t, 44> image{};
  image[0x0e] = 0x34, image[0x0f] = 0x12;  // IP
  image[0x12] = 0x77;                      // AX
  image[0x24] = 0x08;                      // CS
  image[0x2a] = 0x20;                      // LDT
  const TaskImage task = decode_task_image(image, false);
  EXPECT_EQ(task.eip, 0x1234u);
  EXPECT_EQ(task.gpr[0], 0x77u);
  EXPECT_EQ(task.segment[1], 0x08);
  EXPECT_EQ(task.segment[4], 0);  // no FS/GS in a 16-bit TSS
  EXPECT_EQ(task.ldt, 0x20);
  EXPECT_EQ(task.cr3, 0u);
}

TEST(TaskImage, DynamicFieldsRoundTripAndLeaveStaticOnesAlone) {
  for (bool wide : {true, false}) {
    std::array<uint8_t, 104> image{};
    image.fill(0xee);
    TaskImage task;
    task.eip = wide ? 0x1234'5678 : 0x5678;
    task.eflags = 0x246;
    for (uint32_t i = 0; i < 8; ++i) task.gpr[i] = wide ? 0x1000'0000 + i : 0x100 + i;
    task.segment = {0x10, 0x08, 0x10, 0x18, wide ? uint16_t{0x20} : uint16_t{0}, wide ? uint16_t{0x28} : uint16_t{0}};
    const std::span<uint8_t> bytes(image.data(), task_image_size(wide));
    encode_dynamic_fields(task, wide, bytes);
    const TaskImage back = decode_task_image(bytes, wide);
    EXPECT_EQ(back.eip, task.eip);
    EXPECT_EQ(back.gpr, task.gpr);
    EXPECT_EQ(back.segment, task.segment);
    // The range a switch writes back ends with the last selector; CR3 and LDT are untouched.
    const TaskImageRange range = dynamic_fields(wide);
    EXPECT_EQ(range.offset, wide ? 0x20u : 0x0eu);
    EXPECT_EQ(range.offset + range.size, wide ? 0x60u : 0x2au);
    EXPECT_EQ(image[0], 0xee);
    EXPECT_EQ(image[wide ? 0x60 : 0x2a], 0xee);
  }
}

TEST(NewTss, BusyAvailableAndLimitRules) {
  EXPECT_TRUE(check_new_tss(0x20, tss32(false), TaskSwitchReason::kCall).has_value());
  EXPECT_TRUE(check_new_tss(0x20, tss16(false), TaskSwitchReason::kJump).has_value());
  EXPECT_TRUE(check_new_tss(0x20, tss32(true), TaskSwitchReason::kIret).has_value());
  // IRET's back-link must be busy, in the GDT and within it.
  EXPECT_EQ(check_new_tss(0x20, tss32(false), TaskSwitchReason::kIret).error(), fault(kTs, 0x20));
  EXPECT_EQ(check_new_tss(0x24, tss32(true), TaskSwitchReason::kIret).error(), fault(kTs, 0x24));
  EXPECT_EQ(check_new_tss(0x20, std::nullopt, TaskSwitchReason::kIret).error(), fault(kTs, 0x20));
  EXPECT_EQ(check_new_tss(0x20, data(0), TaskSwitchReason::kIret).error(), fault(kTs, 0x20));
  EXPECT_EQ(check_new_tss(0x20, tss32(true, 0x67, false), TaskSwitchReason::kIret).error(),
            fault(kNp, 0x20));
  // SDM 7.2.2: 104 bytes for a 32-bit TSS, 44 for a 16-bit one.
  EXPECT_EQ(check_new_tss(0x20, tss32(false, 0x66), TaskSwitchReason::kCall).error(),
            fault(kTs, 0x20));
  EXPECT_EQ(check_new_tss(0x20, tss16(false, 0x2a), TaskSwitchReason::kInterrupt).error(),
            fault(kTs, 0x20));
}

TEST(NewTaskSegments, Table7_1Faults) {
  const uint64_t ldt = descriptor(0x7000, 0xff, 0x2, false, 0, true);
  EXPECT_TRUE(check_task_ldt(0, std::nullopt)->null);
  EXPECT_EQ(check_task_ldt(0x28, ldt)->descriptor.base, 0x7000u);
  EXPECT_EQ(check_task_ldt(0x2c, ldt).error(), fault(kTs, 0x2c));
  EXPECT_EQ(check_task_ldt(0x28, data(0)).error(), fault(kTs, 0x28));
  EXPECT_EQ(check_task_ldt(0x28, descriptor(0x7000, 0xff, 0x2, false, 0, false)).error(),
            fault(kTs, 0x28));  // an absent LDT is #TS, not #NP

  EXPECT_TRUE(check_task_code_segment(0x1b, code(3)).has_value());
  EXPECT_EQ(check_task_code_segment(0, std::nullopt).error(), fault(kTs, 0));
  EXPECT_EQ(check_task_code_segment(0x1b, code(0)).error(), fault(kTs, 0x18));
  EXPECT_TRUE(check_task_code_segment(0x1b, code(0, true)).has_value());
  EXPECT_EQ(check_task_code_segment(0x18, code(3, true)).error(), fault(kTs, 0x18));
  EXPECT_EQ(check_task_code_segment(0x18, data(0)).error(), fault(kTs, 0x18));
  EXPECT_EQ(check_task_code_segment(0x18, code(0, false, false)).error(), fault(kNp, 0x18));

  EXPECT_TRUE(check_task_stack_segment(0x23, data(3), 3).has_value());
  EXPECT_EQ(check_task_stack_segment(0x20, data(3), 3).error(), fault(kTs, 0x20));
  EXPECT_EQ(check_task_stack_segment(0x23, data(3, false), 3).error(), fault(kTs, 0x20));
  EXPECT_EQ(check_task_stack_segment(0, std::nullopt, 0).error(), fault(kTs, 0));
  EXPECT_EQ(check_task_stack_segment(0x23, data(3, true, false), 3).error(), fault(kSs, 0x20));

  EXPECT_TRUE(check_task_data_segment(0, std::nullopt, 3)->null);
  EXPECT_TRUE(check_task_data_segment(0x23, data(3), 3).has_value());
  EXPECT_EQ(check_task_data_segment(0x10, data(0), 3).error(), fault(kTs, 0x10));
  EXPECT_TRUE(check_task_data_segment(0x13, code(0, true), 3).has_value());
  EXPECT_EQ(check_task_data_segment(0x40, std::nullopt, 0).error(), fault(kTs, 0x40));
  EXPECT_EQ(check_task_data_segment(0x10, data(0, true, false), 0).error(), fault(kNp, 0x10));
}

}  // namespace
}  // namespace lamina::cpu::x86
