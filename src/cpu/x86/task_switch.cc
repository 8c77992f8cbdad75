// Hardware task switches (SDM vol. 3A ch. 7; the JMP, CALL, INT n and IRET pseudo code of
// vol. 2): far JMP/CALL to a TSS or through a task gate, interrupts and exceptions through a
// task gate in the IDT, and IRET with EFLAGS.NT set. The task image and the checks are
// system/task_state; this file moves the state in the order of SDM 7.3.
#include <array>

#include "cpu/x86/core.h"
#include "cpu/x86/system/virtual_8086.h"
#include "cpu/x86/system/task_state.h"

namespace lamina::cpu::x86 {

namespace {

constexpr std::array<uint8_t, 4> kDataSegments = {kEs, kDs, kFs, kGs};

}  // namespace

void CpuCore::read_task_image(uint64_t base, std::span<uint8_t> image) {
  for (size_t i = 0; i < image.size(); i += 4) {
    const uint64_t bytes = read_system(base + i, 4);
    for (size_t j = 0; j < 4 && i + j < image.size(); ++j)
      image[i + j] = static_cast<uint8_t>(bytes >> (8 * j));
  }
}

void CpuCore::set_tss_busy(uint16_t selector, bool busy) {
  // The busy bit is bit 1 of the type, in byte 5 of the descriptor (SDM 7.2.2).
  const uint64_t address = state.gdtr.base + selector_index(selector) * 8u + 5;
  const uint64_t type_byte = read_system(address, 1);
  write_system(address, 1, busy ? type_byte | 2 : type_byte & ~uint64_t{2});
}

void CpuCore::far_task_switch(FarTransfer transfer, uint16_t selector, const FarTarget& target,
                              uint64_t descriptor) {
  const TaskSwitchReason reason =
      transfer == FarTransfer::kCall ? TaskSwitchReason::kCall : TaskSwitchReason::kJump;
  if (target.kind == FarTargetKind::kTss) {
    switch_task(selector, descriptor, reason, std::nullopt);
    return;
  }
  // A task gate names the TSS in its selector field (SDM 7.2.5).
  const auto tss_selector = static_cast<uint16_t>(descriptor >> 16);
  const std::optional<uint64_t> tss_descriptor =
      selector_is_local(tss_selector) ? std::nullopt : read_descriptor(tss_selector);
  checked(check_task_gate_tss(tss_selector, tss_descriptor));
  switch_task(tss_selector, *tss_descriptor, reason, std::nullopt);
}

void CpuCore::event_task_switch(uint16_t tss_selector, uint8_t, bool has_error_code,
                                uint32_t error_code, bool) {
  const std::optional<uint64_t> tss_descriptor =
      selector_is_local(tss_selector) ? std::nullopt : read_descriptor(tss_selector);
  checked(check_task_gate_tss(tss_selector, tss_descriptor));
  switch_task(tss_selector, *tss_descriptor, TaskSwitchReason::kInterrupt,
              has_error_code ? std::optional<uint32_t>(error_code) : std::nullopt);
}

void CpuCore::return_to_previous_task() {
  // IRET with NT: the back-link in the current TSS names the task to resume (SDM 7.4).
  const auto back_link = static_cast<uint16_t>(read_system(state.tr.base, 2));
  const std::optional<uint64_t> descriptor =
      selector_is_local(back_link) ? std::nullopt : read_descriptor(back_link);
  checked(check_new_tss(back_link, descriptor, TaskSwitchReason::kIret));
  switch_task(back_link, *descriptor, TaskSwitchReason::kIret, std::nullopt);
}

void CpuCore::switch_task(uint16_t selector, uint64_t descriptor, TaskSwitchReason reason,
                          std::optional<uint32_t> error_code) {
  // Steps 1-4 of SDM 7.3: check the new TSS and read both images before anything changes, so a
  // fault here (#TS, #NP, #PF) leaves the old task as it was.
  const SegmentDescriptor next_tss = checked(check_new_tss(selector, descriptor, reason));
  const bool next32 = is_tss32(next_tss.type);
  std::array<uint8_t, task_image_size(true)> next_bytes{};
  const std::span<uint8_t> next_image(next_bytes.data(), task_image_size(next32));
  read_task_image(next_tss.base, next_image);
  const bool old32 = is_tss32(state.tr.type());
  std::array<uint8_t, task_image_size(true)> old_bytes{};
  const std::span<uint8_t> old_image(old_bytes.data(), task_image_size(old32));
  read_task_image(state.tr.base, old_image);

  // Steps 5-8: save the old task (EIP past the instruction, or the faulting one for an event).
  TaskImage old_task;
  old_task.eip = static_cast<uint32_t>(state.rip);
  old_task.eflags = static_cast<uint32_t>(read_rflags());
  // IRET leaves the old task with NT clear (it is no longer nested).
  if (reason == TaskSwitchReason::kIret) old_task.eflags &= ~static_cast<uint32_t>(rflags::kNt);
  for (size_t i = 0; i < old_task.gpr.size(); ++i)
    old_task.gpr[i] = static_cast<uint32_t>(state.gpr[i]);
  for (size_t i = 0; i < old_task.segment.size(); ++i)
    old_task.segment[i] = state.segment[i].selector;
  encode_dynamic_fields(old_task, old32, old_image);
  const TaskImageRange saved = dynamic_fields(old32);
  for (uint32_t i = 0; i < saved.size; ++i)
    write_system(state.tr.base + saved.offset + i, 1, old_image[saved.offset + i]);
  if (reason == TaskSwitchReason::kJump || reason == TaskSwitchReason::kIret)
    set_tss_busy(state.tr.selector, false);
  const bool nested = reason == TaskSwitchReason::kCall || reason == TaskSwitchReason::kInterrupt;
  // CALL and events link the new task back to the old one (SDM 7.4).
  if (nested) write_system(next_tss.base, 2, state.tr.selector);
  if (reason != TaskSwitchReason::kIret) set_tss_busy(selector, true);

  // Steps 9-11: TR names the new task, CR0.TS is set for lazy FPU switching.
  state.tr = segment_cache(LoadedSegment{selector, next_tss, false});
  state.tr.attributes |= 2;  // busy
  state.cr0 |= cr0::kTs;
  // SDM 17.2.4: the local breakpoint enables L0-L3 are cleared on every task switch.
  state.dr[7] &= ~uint64_t{0x55};
  update_breakpoints();

  // Step 12: load the new task. From here a fault belongs to the new task (its EIP).
  TaskImage next = decode_task_image(next_image, next32);
  if (nested) next.eflags |= static_cast<uint32_t>(rflags::kNt);
  state.rip = next.eip;
  instruction_rip = state.rip;
  if (next32) {
    state.write_rflags(next.eflags);
    for (size_t i = 0; i < next.gpr.size(); ++i) state.gpr[i] = next.gpr[i];
  } else {
    // A 16-bit TSS holds the low words; the upper halves keep their values.
    state.write_rflags((read_rflags() & ~uint64_t{0xffff}) | (next.eflags & 0xffff));
    for (size_t i = 0; i < next.gpr.size(); ++i)
      state.gpr[i] = (state.gpr[i] & ~uint64_t{0xffff}) | (next.gpr[i] & 0xffff);
  }
  interrupt_window_may_open();
  // The selectors are loaded before their descriptors (SDM 7.3 step 12): a fault while
  // checking leaves them visible but unusable.
  state.ldtr = SegmentCache{next.ldt, 0, 0, 0};
  for (size_t i = 0; i < next.segment.size(); ++i)
    state.segment[i] = SegmentCache{next.segment[i], 0, 0, 0};
  // CR3 is loaded when paging is on (a 16-bit TSS has none).
  if (next32 && (state.cr0 & cr0::kPg)) write_paging_control(3, next.cr3);
  load_task_segments(next);
  stop_block = true;
  event_delivered = true;
  check_code_offset(state.segment[kCs], state.rip);
  // An exception's error code goes onto the new task's stack (SDM 6.12.2).
  if (error_code) push(*error_code, next32 ? 4 : 2);
  // SDM 17.2.3, 7.2.1: a new task whose TSS has T set starts with a #DB (DR6.BT), before its
  // first instruction.
  if (next.debug_trap) {
    state.dr[6] |= dr6::kBt;
    raise_fault(vector::kDebug);
  }
}

void CpuCore::load_task_segments(const TaskImage& next) {
  const uint16_t ldt = next.ldt;
  state.ldtr = segment_cache(checked(
      check_task_ldt(ldt, selector_is_local(ldt) ? std::nullopt : read_descriptor(ldt))));
  if (state.virtual_8086()) {
    // A task entered with EFLAGS.VM runs in virtual-8086 mode at CPL 3 (SDM 20.2.5).
    for (size_t i = 0; i < next.segment.size(); ++i) {
      state.segment[i] = SegmentCache{next.segment[i], virtual_8086_segment_base(next.segment[i]),
                                      kVirtual8086SegmentLimit, 0xf3};
    }
    state.cpl = 3;
    update_mode();
    return;
  }
  const uint16_t code_selector = next.segment[kCs];
  const std::optional<uint64_t> code_descriptor = read_descriptor(code_selector);
  const LoadedSegment code = checked(check_task_code_segment(code_selector, code_descriptor));
  const uint8_t cpl = selector_rpl(code_selector);
  mark_accessed(code_selector, *code_descriptor);
  SegmentCache code_cache = segment_cache(code);
  code_cache.attributes |= 1;
  set_code_segment(code_cache, cpl);
  const uint16_t stack_selector = next.segment[kSs];
  const std::optional<uint64_t> stack_descriptor = read_descriptor(stack_selector);
  install_segment(kSs, checked(check_task_stack_segment(stack_selector, stack_descriptor, cpl)),
                  stack_descriptor);
  for (uint8_t segment : kDataSegments) {
    const uint16_t data_selector = next.segment[segment];
    const std::optional<uint64_t> data_descriptor = read_descriptor(data_selector);
    install_segment(segment, checked(check_task_data_segment(data_selector, data_descriptor, cpl)),
                    data_descriptor);
  }
}

}  // namespace lamina::cpu::x86
