#include "cpu/x86/system/task_state.h"

namespace lamina::cpu::x86 {

namespace {

using Failure = std::unexpected<Fault>;

Failure invalid_tss(uint16_t selector) {
  return Failure({exception_vector::kInvalidTss, selector & 0xfffcu});
}
Failure not_present(uint16_t selector) {
  return Failure({exception_vector::kSegmentNotPresent, selector & 0xfffcu});
}

uint32_t get(std::span<const uint8_t> image, uint32_t offset, uint32_t bytes) {
  uint32_t value = 0;
  for (uint32_t i = 0; i < bytes; ++i) value |= uint32_t{image[offset + i]} << (8 * i);
  return value;
}
void put(std::span<uint8_t> image, uint32_t offset, uint32_t bytes, uint32_t value) {
  for (uint32_t i = 0; i < bytes; ++i) image[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

// Where each field of TaskImage sits; `width` is 4 in a 32-bit TSS and 2 in a 16-bit one.
struct Layout {
  uint32_t width, eip, eflags, gpr, segment, segment_count, ldt;
};
constexpr Layout layout(bool tss32) {
  using namespace tss;
  return tss32 ? Layout{4, offset32::kEip, offset32::kEflags, offset32::kEax, offset32::kEs, 6,
                        offset32::kLdt}
               : Layout{2, offset16::kIp, offset16::kFlags, offset16::kAx, offset16::kEs, 4,
                        offset16::kLdt};
}

}  // namespace

TaskImage decode_task_image(std::span<const uint8_t> image, bool tss32) {
  const Layout at = layout(tss32);
  TaskImage task;
  task.back_link = static_cast<uint16_t>(get(image, 0, 2));
  task.eip = get(image, at.eip, at.width);
  task.eflags = get(image, at.eflags, at.width);
  for (uint32_t i = 0; i < 8; ++i) task.gpr[i] = get(image, at.gpr + i * at.width, at.width);
  // Selectors take a 4-byte slot in a 32-bit TSS (the upper word is reserved).
  for (uint32_t i = 0; i < at.segment_count; ++i)
    task.segment[i] = static_cast<uint16_t>(get(image, at.segment + i * at.width, 2));
  task.ldt = static_cast<uint16_t>(get(image, at.ldt, 2));
  if (tss32) {
    task.cr3 = get(image, tss::offset32::kCr3, 4);
    task.debug_trap = (get(image, tss::offset32::kTrapFlag, 2) & 1) != 0;
  }
  return task;
}

TaskImageRange dynamic_fields(bool tss32) {
  const Layout at = layout(tss32);
  return {at.eip, at.segment + at.segment_count * at.width - at.eip};
}

void encode_dynamic_fields(const TaskImage& task, bool tss32, std::span<uint8_t> image) {
  const Layout at = layout(tss32);
  put(image, at.eip, at.width, task.eip);
  put(image, at.eflags, at.width, task.eflags);
  for (uint32_t i = 0; i < 8; ++i) put(image, at.gpr + i * at.width, at.width, task.gpr[i]);
  // The reserved upper word of a 32-bit selector slot is left as it was.
  for (uint32_t i = 0; i < at.segment_count; ++i)
    put(image, at.segment + i * at.width, 2, task.segment[i]);
}

std::expected<SegmentDescriptor, Fault> check_new_tss(uint16_t selector,
                                                      std::optional<uint64_t> raw,
                                                      TaskSwitchReason reason) {
  if (selector_is_local(selector) || !raw) return invalid_tss(selector);
  const SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  const bool busy = descriptor.type == system_type::kTssBusy ||
                    descriptor.type == system_type::kTss16Busy;
  const bool available = descriptor.type == system_type::kTssAvailable ||
                         descriptor.type == system_type::kTss16Available;
  // SDM IRET pseudo code: the back-link must name a busy TSS; others were checked available.
  if (!descriptor.system || !(reason == TaskSwitchReason::kIret ? busy : available))
    return invalid_tss(selector);
  if (!descriptor.present) return not_present(selector);
  // SDM 7.2.2: a TSS limit below the minimum size is #TS.
  if (descriptor.limit < task_image_size(is_tss32(descriptor.type)) - 1)
    return invalid_tss(selector);
  return descriptor;
}

std::expected<LoadedSegment, Fault> check_task_ldt(uint16_t selector,
                                                   std::optional<uint64_t> raw) {
  if (selector_is_null(selector)) return LoadedSegment{selector, {}, true};
  if (selector_is_local(selector) || !raw) return invalid_tss(selector);
  const SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  // Table 7-1: an LDT that is absent is #TS too, not #NP.
  if (!descriptor.system || descriptor.type != system_type::kLdt ||
      !descriptor.present)
    return invalid_tss(selector);
  return LoadedSegment{selector, descriptor, false};
}

std::expected<LoadedSegment, Fault> check_task_code_segment(uint16_t selector,
                                                            std::optional<uint64_t> raw) {
  if (selector_is_null(selector) || !raw) return invalid_tss(selector);
  const SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  const uint8_t rpl = selector_rpl(selector);
  if (!descriptor.is_code()) return invalid_tss(selector);
  if (descriptor.conforming() ? descriptor.dpl > rpl : descriptor.dpl != rpl)
    return invalid_tss(selector);
  if (!descriptor.present) return not_present(selector);
  return LoadedSegment{selector, descriptor, false};
}

std::expected<LoadedSegment, Fault> check_task_stack_segment(uint16_t selector,
                                                             std::optional<uint64_t> raw,
                                                             uint8_t cpl) {
  if (selector_is_null(selector) || !raw) return invalid_tss(selector);
  const SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (!descriptor.writable() || selector_rpl(selector) != cpl || descriptor.dpl != cpl)
    return invalid_tss(selector);
  if (!descriptor.present) return Failure({exception_vector::kStackFault, selector & 0xfffcu});
  return LoadedSegment{selector, descriptor, false};
}

std::expected<LoadedSegment, Fault> check_task_data_segment(uint16_t selector,
                                                            std::optional<uint64_t> raw,
                                                            uint8_t cpl) {
  if (selector_is_null(selector)) return LoadedSegment{selector, {}, true};
  if (!raw) return invalid_tss(selector);
  const SegmentDescriptor descriptor = decode_segment_descriptor(*raw);
  if (descriptor.system || !descriptor.readable()) return invalid_tss(selector);
  if (!descriptor.conforming() &&
      (descriptor.dpl < cpl || descriptor.dpl < selector_rpl(selector)))
    return invalid_tss(selector);
  if (!descriptor.present) return not_present(selector);
  return LoadedSegment{selector, descriptor, false};
}

}  // namespace lamina::cpu::x86
