#pragma once
// The pure parts of a hardware task switch (Intel SDM Vol. 3A ch. 7; AMD APM Vol. 2 12.3): the
// task image a 16- or 32-bit TSS holds, the dynamic fields a switch saves into the old TSS, and
// the checks on the new TSS and on the segments the new task loads, with the faults of SDM
// 7.3 and Table 7-1 (the JMP/CALL/INT privilege checks that come first are segment_checks').
//
// What the core does around them: reads the TSS images and descriptors through the MMU (passing
// std::nullopt for a selector beyond its table's limit), saves the old task, flips busy bits,
// writes the back-link, sets CR0.TS and loads TR before it loads the new task's registers with
// these checks, so that their faults are delivered in the new task (SDM 7.3 step 12).
//
// Thread-safety: stateless.

#include <array>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>

#include "cpu/x86/system/descriptors.h"
#include "cpu/x86/system/fault.h"
#include "cpu/x86/system/segment_checks.h"

namespace lamina::cpu::x86 {

// What started the switch; it decides the busy bits, NT and the back-link (SDM Table 7-2).
enum class TaskSwitchReason : uint8_t { kJump, kCall, kInterrupt, kIret };

// A task's state as its TSS holds it. The 16-bit TSS has no CR3, no FS/GS and no T flag; its
// register fields fill the low 16 bits here.
struct TaskImage {
  uint16_t back_link = 0;
  uint32_t cr3 = 0;
  uint32_t eip = 0;
  uint32_t eflags = 0;
  std::array<uint32_t, 8> gpr{};      // EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI
  std::array<uint16_t, 6> segment{};  // ES, CS, SS, DS, FS, GS
  uint16_t ldt = 0;
  bool debug_trap = false;  // T: a #DB trap when the task is entered
};

// A 32-bit TSS (types 9/11) or a 16-bit one (types 1/3).
inline constexpr bool is_tss32(uint8_t type) { return (type & 0x8) != 0; }
// The bytes of the TSS a switch reads: the smallest limit + 1 (104 or 44).
inline constexpr uint32_t task_image_size(bool tss32) {
  return (tss32 ? tss::kMinimumLimit32 : tss::kMinimumLimit16) + 1;
}

// `image` holds task_image_size(tss32) bytes from the TSS base.
TaskImage decode_task_image(std::span<const uint8_t> image, bool tss32);

// The part of the TSS a switch writes for the old task: EIP (IP) up to the last segment
// selector (SDM 7.3 step 8). CR3, the LDT selector and the stacks of levels 0-2 are not saved.
struct TaskImageRange {
  uint32_t offset = 0;
  uint32_t size = 0;
};
TaskImageRange dynamic_fields(bool tss32);
// Writes the dynamic fields of `task` into `image` (task_image_size bytes, as read).
void encode_dynamic_fields(const TaskImage& task, bool tss32, std::span<uint8_t> image);

// The TSS a switch goes to. An IRET's back-link must name a busy TSS in the GDT (#TS, or #NP
// when absent); every TSS must be at least 104 (32-bit) or 44 (16-bit) bytes, else
// #TS(selector). JMP/CALL/INT targets have passed check_far_transfer/check_task_gate_tss.
std::expected<SegmentDescriptor, Fault> check_new_tss(uint16_t selector,
                                                      std::optional<uint64_t> descriptor,
                                                      TaskSwitchReason reason);

// The new task's segments, in the order the switch loads them (SDM 7.3, Table 7-1). Invalid
// selectors and descriptors are #TS(selector); absent ones #NP, or #SS for the stack.
// LDTR: null (no LDT) or an LDT descriptor in the GDT.
std::expected<LoadedSegment, Fault> check_task_ldt(uint16_t selector,
                                                   std::optional<uint64_t> descriptor);
// CS: code; DPL = RPL (non-conforming) or DPL <= RPL (conforming). The RPL is the new CPL.
std::expected<LoadedSegment, Fault> check_task_code_segment(uint16_t selector,
                                                            std::optional<uint64_t> descriptor);
// SS: writable data with RPL = DPL = the new CPL.
std::expected<LoadedSegment, Fault> check_task_stack_segment(uint16_t selector,
                                                             std::optional<uint64_t> descriptor,
                                                             uint8_t cpl);
// DS, ES, FS, GS: null, data or readable code; data and non-conforming code need DPL >= CPL
// and DPL >= RPL.
std::expected<LoadedSegment, Fault> check_task_data_segment(uint16_t selector,
                                                            std::optional<uint64_t> descriptor,
                                                            uint8_t cpl);

}  // namespace lamina::cpu::x86
