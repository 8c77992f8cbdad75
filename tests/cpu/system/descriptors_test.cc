#include "cpu/x86/system/descriptors.h"

#include <gtest/gtest.h>

#include "descriptor_builder.h"

namespace lamina::cpu::x86 {
namespace {

using test_support::descriptor;
using test_support::gate;

// Linux's flat GDT entries (arch/x86 GDT_ENTRY_INIT values), a well-known reference.
constexpr uint64_t kKernelCode32 = 0x00cf9b000000ffff;
constexpr uint64_t kKernelCode64 = 0x00af9b000000ffff;
constexpr uint64_t kUserData = 0x00cff3000000ffff;

TEST(Descriptors, DecodesLinuxFlatSegments) {
  SegmentDescriptor code32 = decode_segment_descriptor(kKernelCode32);
  EXPECT_EQ(code32.base, 0u);
  EXPECT_EQ(code32.limit, 0xffffffffu);
  EXPECT_TRUE(code32.is_code());
  EXPECT_TRUE(code32.readable());
  EXPECT_TRUE(code32.accessed());
  EXPECT_FALSE(code32.conforming());
  EXPECT_TRUE(code32.present);
  EXPECT_TRUE(code32.default_big);
  EXPECT_FALSE(code32.is_64bit_code());
  EXPECT_EQ(code32.dpl, 0);
  SegmentDescriptor code64 = decode_segment_descriptor(kKernelCode64);
  EXPECT_TRUE(code64.is_64bit_code());
  SegmentDescriptor data = decode_segment_descriptor(kUserData);
  EXPECT_TRUE(data.is_data());
  EXPECT_TRUE(data.writable());
  EXPECT_FALSE(data.expand_down());
  EXPECT_EQ(data.dpl, 3);
}

TEST(Descriptors, DecodesEveryField) {
  SegmentDescriptor d = decode_segment_descriptor(
      descriptor(0x12345678, 0xabcde, 0x6, true, 2, false, false, true, false, true));
  EXPECT_EQ(d.base, 0x12345678u);
  EXPECT_EQ(d.limit, 0xabcdeu);  // G = 0: bytes
  EXPECT_EQ(d.type, 0x6);
  EXPECT_FALSE(d.system);
  EXPECT_EQ(d.dpl, 2);
  EXPECT_FALSE(d.present);
  EXPECT_TRUE(d.available);
  EXPECT_FALSE(d.long_mode);
  EXPECT_TRUE(d.expand_down());
  EXPECT_TRUE(d.writable());
  SegmentDescriptor scaled =
      decode_segment_descriptor(descriptor(0, 0x12, 0x2, true, 0, true, false, false, true));
  EXPECT_EQ(scaled.limit, 0x12fffu);  // G = 1: 4 KiB units, low 12 bits all ones
  EXPECT_EQ(with_accessed_bit(descriptor(0, 0, 0x2, true, 0, true)) >> 40 & 0xf, 0x3u);
  uint64_t tss = descriptor(0x1000, 0x67, system_type::kTssAvailable, false, 0, true);
  EXPECT_EQ(decode_segment_descriptor(with_busy_bit(tss, true)).type, system_type::kTssBusy);
  EXPECT_EQ(with_busy_bit(with_busy_bit(tss, true), false), tss);
}

TEST(Descriptors, LimitChecksIncludingExpandDown) {
  SegmentDescriptor up = decode_segment_descriptor(descriptor(0, 0xfff, 0x2, true, 0, true));
  EXPECT_TRUE(offset_within_limit(up, 0xffc, 4));
  EXPECT_FALSE(offset_within_limit(up, 0xffd, 4));
  EXPECT_FALSE(offset_within_limit(up, ~uint64_t{0}, 2));  // wraps
  // Expand-down, B = 0: valid offsets 0x1000..0xffff.
  SegmentDescriptor down = decode_segment_descriptor(descriptor(0, 0xfff, 0x6, true, 0, true));
  EXPECT_FALSE(offset_within_limit(down, 0xfff, 1));
  EXPECT_TRUE(offset_within_limit(down, 0x1000, 2));
  EXPECT_TRUE(offset_within_limit(down, 0xfffe, 2));
  EXPECT_FALSE(offset_within_limit(down, 0xffff, 2));
  SegmentDescriptor big_down =
      decode_segment_descriptor(descriptor(0, 0xfff, 0x6, true, 0, true, false, true));
  EXPECT_TRUE(offset_within_limit(big_down, 0xfffffffc, 4));
}

TEST(Descriptors, LongModeSystemDescriptor) {
  uint64_t low = descriptor(0x12345000, 0x67, system_type::kTssAvailable, false, 0, true);
  auto tss = decode_system_descriptor_64(low, 0xffff8880);
  ASSERT_TRUE(tss.has_value());
  EXPECT_EQ(tss->base, 0xffff888012345000u);
  EXPECT_EQ(tss->limit, 0x67u);
  EXPECT_EQ(tss->type, system_type::kTssAvailable);
  EXPECT_FALSE(decode_system_descriptor_64(low, 0xffff8880 | (uint64_t{1} << 40)).has_value());
}

TEST(Descriptors, LegacyGates) {
  auto interrupt = decode_gate(gate(0x12345678, 0x10, 0xe, 3, true), 0, false);
  ASSERT_TRUE(interrupt.has_value());
  EXPECT_EQ(interrupt->kind, GateKind::kInterrupt);
  EXPECT_EQ(interrupt->bits, 32);
  EXPECT_EQ(interrupt->offset, 0x12345678u);
  EXPECT_EQ(interrupt->selector, 0x10);
  EXPECT_EQ(interrupt->dpl, 3);
  EXPECT_TRUE(interrupt->present);
  auto trap16 = decode_gate(gate(0x12345678, 0x8, 0x7, 0, false), 0, false);
  ASSERT_TRUE(trap16.has_value());
  EXPECT_EQ(trap16->kind, GateKind::kTrap);
  EXPECT_EQ(trap16->bits, 16);
  EXPECT_EQ(trap16->offset, 0x5678u);
  EXPECT_FALSE(trap16->present);
  auto call = decode_gate(gate(0x1000, 0x18, 0xc, 3, true, 5), 0, false);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->kind, GateKind::kCall);
  EXPECT_EQ(call->parameter_count, 5);
  auto task = decode_gate(gate(0, 0x28, 0x5, 0, true), 0, false);
  ASSERT_TRUE(task.has_value());
  EXPECT_EQ(task->kind, GateKind::kTask);
  EXPECT_EQ(task->selector, 0x28);
  // TSS, LDT, reserved types and code/data segments are not gates.
  for (uint8_t type : {0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xa, 0xb, 0xd}) {
    EXPECT_FALSE(decode_gate(gate(0, 0, type, 0, true), 0, false).has_value()) << int{type};
  }
  EXPECT_FALSE(decode_gate(kKernelCode32, 0, false).has_value());
}

TEST(Descriptors, LongModeGates) {
  // Interrupt gate with IST 3 at 0xffffffff81234567.
  uint64_t low = gate(0x81234567, 0x10, 0xe, 0, true, 3);
  auto interrupt = decode_gate(low, 0xffffffff, true);
  ASSERT_TRUE(interrupt.has_value());
  EXPECT_EQ(interrupt->bits, 64);
  EXPECT_EQ(interrupt->offset, 0xffffffff81234567u);
  EXPECT_EQ(interrupt->ist, 3);
  auto trap = decode_gate(gate(0x1000, 0x10, 0xf, 3, true), 0, true);
  ASSERT_TRUE(trap.has_value());
  EXPECT_EQ(trap->kind, GateKind::kTrap);
  EXPECT_EQ(trap->ist, 0);
  auto call = decode_gate(gate(0x2000, 0x10, 0xc, 3, true), 0x1, true);
  ASSERT_TRUE(call.has_value());
  EXPECT_EQ(call->offset, 0x1'0000'2000u);
  // The 64-bit call gate's upper type field must be zero.
  EXPECT_FALSE(decode_gate(gate(0x2000, 0x10, 0xc, 3, true), uint64_t{0xc} << 40, true));
  // 16-bit gates and task gates do not exist in IA-32e mode.
  for (uint8_t type : {0x4, 0x5, 0x6, 0x7}) {
    EXPECT_FALSE(decode_gate(gate(0, 0x10, type, 0, true), 0, true).has_value()) << int{type};
  }
}

TEST(Descriptors, TssLayouts) {
  EXPECT_EQ(tss::stack_pointer_offset_32(0), 0x04u);
  EXPECT_EQ(tss::stack_selector_offset_32(0), 0x08u);
  EXPECT_EQ(tss::stack_pointer_offset_32(2), 0x14u);
  EXPECT_EQ(tss::stack_selector_offset_32(2), 0x18u);
  EXPECT_EQ(tss::stack_pointer_offset_16(0), 0x02u);
  EXPECT_EQ(tss::stack_selector_offset_16(2), 0x0cu);
  EXPECT_EQ(tss::stack_pointer_offset_64(0), 0x04u);
  EXPECT_EQ(tss::stack_pointer_offset_64(2), 0x14u);
  EXPECT_EQ(tss::ist_offset_64(1), 0x24u);
  EXPECT_EQ(tss::ist_offset_64(7), 0x54u);
  EXPECT_EQ(tss::offset32::kCr3, 0x1cu);
  EXPECT_EQ(tss::offset32::kLdt, 0x60u);
  EXPECT_EQ(tss::offset16::kLdt, 0x2au);
}

TEST(Descriptors, InnerStackSlots) {
  // 64-bit TSS: RSP0 at 4, IST3 at 0x34; the whole 8 bytes must be within the limit.
  auto rsp0 = tss::inner_stack_slot(system_type::kTssBusy, true, 0, 0, 0x67);
  ASSERT_TRUE(rsp0.has_value());
  EXPECT_EQ(rsp0->offset, 4u);
  EXPECT_EQ(rsp0->pointer_bytes, 8);
  EXPECT_FALSE(rsp0->has_selector);
  EXPECT_EQ(tss::inner_stack_slot(system_type::kTssBusy, true, 0, 3, 0x67)->offset, 0x34u);
  EXPECT_TRUE(tss::inner_stack_slot(system_type::kTssBusy, true, 0, 7, 0x5b).has_value());
  EXPECT_FALSE(tss::inner_stack_slot(system_type::kTssBusy, true, 0, 7, 0x5a).has_value());
  // 32-bit TSS: ESP1 at 0x0c and SS1 at 0x10 (bytes up to 0x11).
  auto esp1 = tss::inner_stack_slot(system_type::kTssBusy, false, 1, 0, 0x11);
  ASSERT_TRUE(esp1.has_value());
  EXPECT_EQ(esp1->offset, 0x0cu);
  EXPECT_EQ(esp1->pointer_bytes, 4);
  EXPECT_TRUE(esp1->has_selector);
  EXPECT_FALSE(tss::inner_stack_slot(system_type::kTssBusy, false, 1, 0, 0x10).has_value());
  // 16-bit TSS: SP0 at 2 and SS0 at 4.
  auto sp0 = tss::inner_stack_slot(system_type::kTss16Busy, false, 0, 0, 0x2b);
  ASSERT_TRUE(sp0.has_value());
  EXPECT_EQ(sp0->offset, 2u);
  EXPECT_EQ(sp0->pointer_bytes, 2);
  EXPECT_FALSE(tss::inner_stack_slot(system_type::kTss16Busy, false, 0, 0, 4).has_value());
}

TEST(Descriptors, IoPermissionBitmap) {
  // Map right after a 104-byte TSS; port 0x3f8's bits live at byte 0x68 + 0x7f.
  EXPECT_EQ(tss::io_bitmap_offset(0x2067, 0x68, 0x3f8), 0xe7u);
  EXPECT_FALSE(tss::io_bitmap_offset(0xe7, 0x68, 0x3f8).has_value());  // second byte outside
  EXPECT_TRUE(tss::io_bitmap_offset(0xe8, 0x68, 0x3f8).has_value());
  // A map base beyond the limit refuses every port (the usual "no bitmap" setting).
  EXPECT_FALSE(tss::io_bitmap_offset(0x67, 0xffff, 0).has_value());
  uint16_t word = 1u << 1;  // port 0x3f9 denied
  EXPECT_TRUE(tss::io_bitmap_permits(word, 0x3f8, 1));
  EXPECT_FALSE(tss::io_bitmap_permits(word, 0x3f8, 2));
  EXPECT_FALSE(tss::io_bitmap_permits(word, 0x3f9, 1));
  EXPECT_TRUE(tss::io_bitmap_permits(word, 0x3fa, 4));
  // A 2-byte access at 0x3ff uses bit 7 of the first byte and bit 0 of the next.
  EXPECT_FALSE(tss::io_bitmap_permits(uint16_t{1u << 8}, 0x3ff, 2));
  EXPECT_TRUE(tss::io_bitmap_permits(uint16_t{1u << 8}, 0x3ff, 1));
}

}  // namespace
}  // namespace lamina::cpu::x86
