#include "cpu/x86/system/virtual_8086.h"

#include <gtest/gtest.h>

namespace lamina::cpu::x86 {
namespace {

TEST(Virtual8086, IoplSensitiveInstructionsFaultBelowIopl3) {
  for (uint8_t iopl = 0; iopl < 3; ++iopl) EXPECT_TRUE(virtual_8086_sensitive_fault(true, iopl));
  EXPECT_FALSE(virtual_8086_sensitive_fault(true, 3));
  EXPECT_FALSE(virtual_8086_sensitive_fault(false, 0));  // protected mode has its own CPL rules
  EXPECT_EQ(virtual_8086_segment_base(0xb800), 0xb8000u);
}

TEST(Virtual8086, InterruptFrameFollowsFigure20_5) {
  // ES, CS, SS, DS, FS, GS
  const std::array<uint16_t, 6> segments = {0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666};
  const auto frame = virtual_8086_interrupt_frame(segments, 0xfffe, 0x23202, 0x0105, true, 0);
  ASSERT_EQ(frame.count, 10);
  const std::array<uint32_t, 10> expected = {0x6666, 0x5555, 0x4444, 0x1111, 0x3333,
                                             0xfffe, 0x23202, 0x2222, 0x0105, 0};
  EXPECT_EQ(frame.values, expected);
  EXPECT_EQ(virtual_8086_interrupt_frame(segments, 0, 0, 0, false, 0).count, 9);
}

TEST(Virtual8086, ReturnFrameDecodesAndChecksEip) {
  const std::array<uint32_t, 9> popped = {0x0100, 0xffff'2000, 0x23202, 0x0ffe, 0x3000,
                                          0x4000, 0x5000, 0x6000, 0x7000};
  const auto result = decode_virtual_8086_return(popped);
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->eip, 0x100u);
  EXPECT_EQ(result->eflags, 0x23202u);
  EXPECT_EQ(result->esp, 0xffeu);
  const std::array<uint16_t, 6> segments = {0x4000, 0x2000, 0x3000, 0x5000, 0x6000, 0x7000};
  EXPECT_EQ(result->segments, segments);
  std::array<uint32_t, 9> far = popped;
  far[0] = 0x10000;  // past CS's 64 KiB limit
  EXPECT_EQ(decode_virtual_8086_return(far).error(), general_protection_fault());
}

}  // namespace
}  // namespace lamina::cpu::x86
