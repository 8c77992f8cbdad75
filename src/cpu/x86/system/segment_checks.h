#pragma once
// The protected-mode privilege and type checks for loading segment registers and for far control
// transfers, as pure functions: given the selector, the raw descriptor the core read and the
// current privilege level, each returns the state to load or the exception to raise. Rules follow
// the pseudo code of MOV/POP/LxS, JMP/CALL/RET far, INT n/interrupt delivery, IRET, LTR and LLDT
// in Intel SDM Vol. 2, and Vol. 3A 5.5-5.8, 6.12, 6.14.
//
// What the core does around them: reads descriptors from the GDT/LDT/IDT through the MMU
// (passing std::nullopt when the selector's index lies beyond the table limit), checks the new
// instruction pointer against the limit and for canonical form, does the stack accesses and the
// task switch itself, writes back the accessed bit (with_accessed_bit) when the loaded descriptor
// does not have it, and sets the EXT bit (`external`) for events not caused by an instruction.
// Real mode and virtual-8086 mode loads are the core's (no checks apply there).
//
// Thread-safety: stateless.

#include <cstdint>
#include <expected>
#include <optional>

#include "cpu/x86/system/descriptors.h"
#include "cpu/x86/system/fault.h"

namespace lamina::cpu::x86 {

// The error code naming IDT entry `vector` (SDM 6.13): index << 3 | IDT | EXT.
inline constexpr uint32_t idt_error_code(uint8_t vector, bool external) {
  return (uint32_t{vector} << 3) | 2u | (external ? 1u : 0u);
}

// What goes into a segment register: the visible selector and the decoded hidden part.
struct LoadedSegment {
  uint16_t selector = 0;
  SegmentDescriptor descriptor;  // meaningless when `null`
  // A null selector was loaded: the register is unusable (any use faults outside 64-bit mode).
  bool null = false;
};

// MOV/POP/LDS/LES/LFS/LGS to DS, ES, FS or GS.
std::expected<LoadedSegment, Fault> check_data_segment_load(uint16_t selector,
                                                            std::optional<uint64_t> descriptor,
                                                            uint8_t cpl);

// MOV/POP/LSS to SS. `mode_64` is 64-bit mode (IA-32e with CS.L = 1), where CPL < 3 may load a
// null selector whose RPL equals CPL.
std::expected<LoadedSegment, Fault> check_stack_segment_load(uint16_t selector,
                                                             std::optional<uint64_t> descriptor,
                                                             uint8_t cpl, bool mode_64);

// Far JMP or CALL through `selector`. A code segment target is checked completely; for gates and
// TSSs only the first step is checked and the core continues as the kind says.
enum class FarTransfer : uint8_t { kJump, kCall };
enum class FarTargetKind : uint8_t { kCodeSegment, kCallGate, kTaskGate, kTss };
struct FarTarget {
  FarTargetKind kind = FarTargetKind::kCodeSegment;
  LoadedSegment code;  // kCodeSegment: CS to load (RPL set to CPL; CPL does not change)
  // kCallGate: read the gate's upper half in IA-32e mode (its index must be within the limit,
  // else #GP(gate selector)), decode_gate() (nullopt -> #GP(gate selector)), then
  // check_call_gate_target. kTaskGate: check_task_gate_tss on the gate's TSS selector.
  // kTss: the TSS descriptor below is available, present and privileged enough for the switch.
  SegmentDescriptor descriptor;
};
// `long_mode` is EFER.LMA.
std::expected<FarTarget, Fault> check_far_transfer(FarTransfer transfer, uint16_t selector,
                                                   std::optional<uint64_t> descriptor, uint8_t cpl,
                                                   bool long_mode);

struct CallGateTarget {
  LoadedSegment code;  // CS to load, RPL = new CPL
  uint8_t new_cpl = 0;
  bool more_privileged = false;  // CALL to a non-conforming segment with DPL < CPL: stack switch
};
// The code segment named by a call gate (`code_selector` = GateDescriptor::selector).
std::expected<CallGateTarget, Fault> check_call_gate_target(FarTransfer transfer,
                                                            uint16_t code_selector,
                                                            std::optional<uint64_t> descriptor,
                                                            uint8_t cpl, bool long_mode);

// The TSS named by a task gate: must be in the GDT, available (not busy) and present.
std::expected<SegmentDescriptor, Fault> check_task_gate_tss(uint16_t tss_selector,
                                                            std::optional<uint64_t> descriptor);

// Far RET and IRET (protected mode, not to virtual-8086): the returned-to code segment.
struct ReturnTarget {
  LoadedSegment code;
  uint8_t new_cpl = 0;  // the selector's RPL
  bool outer = false;   // new_cpl > cpl: SS:SP are popped and checked too
};
std::expected<ReturnTarget, Fault> check_return_code_segment(uint16_t selector,
                                                             std::optional<uint64_t> descriptor,
                                                             uint8_t cpl, bool long_mode);
// The SS popped by a return to an outer level (or by IRET in 64-bit mode): the rules of an SS
// load at the new CPL. `to_mode_64`: the new CS is a 64-bit segment in IA-32e mode, where a null
// SS with RPL = new CPL is allowed unless returning to CPL 3.
std::expected<LoadedSegment, Fault> check_return_stack_segment(uint16_t selector,
                                                               std::optional<uint64_t> descriptor,
                                                               uint8_t new_cpl, bool to_mode_64);
// After a return to an outer level, DS/ES/FS/GS holding a data or non-conforming code segment
// more privileged than the new CPL are loaded with null (SDM RET and IRET pseudo code).
bool must_null_after_return(const LoadedSegment& segment, uint8_t new_cpl);

// Interrupt and exception delivery through the IDT (SDM 6.12.1, 6.14). The core checks the IDT
// limit itself (-> #GP(idt_error_code)). `software` is INT n, INT3 and INTO, which also need
// gate DPL >= CPL (not INT1 or hardware events).
std::expected<GateDescriptor, Fault> check_interrupt_gate(uint8_t vector, uint64_t low,
                                                          uint64_t high, bool software, uint8_t cpl,
                                                          bool long_mode, bool external);
struct InterruptTarget {
  LoadedSegment code;
  uint8_t new_cpl = 0;
  bool more_privileged = false;  // switch to the stack of new_cpl from the TSS (or IST)
};
// `from_virtual_8086`: the event interrupts virtual-8086 mode (CPL 3), whose handler must be a
// non-conforming DPL 0 segment (SDM 20.3.1.1), else #GP(selector).
std::expected<InterruptTarget, Fault> check_interrupt_code_segment(
    uint16_t selector, std::optional<uint64_t> descriptor, uint8_t cpl, bool long_mode,
    bool external, bool from_virtual_8086 = false);
// The SS read from the TSS for an inter-privilege interrupt or call gate outside IA-32e mode
// (IA-32e mode loads a null SS with RPL = new CPL instead). Faults are #TS, or #SS if absent.
std::expected<LoadedSegment, Fault> check_inner_stack_segment(uint16_t selector,
                                                              std::optional<uint64_t> descriptor,
                                                              uint8_t new_cpl, bool external);

// LTR: an available TSS in the GDT (16- or 32-bit outside IA-32e mode, 64-bit inside, where
// `high` is the descriptor's upper 8 bytes: nullopt when they lie past the GDT limit, which is
// #GP(selector); ignored outside IA-32e mode). The core then sets the busy bit (with_busy_bit).
std::expected<LoadedSegment, Fault> check_ltr(uint16_t selector, std::optional<uint64_t> low,
                                              std::optional<uint64_t> high, bool long_mode);
// LLDT: an LDT descriptor in the GDT, or a null selector (no LDT); `high` as for LTR.
std::expected<LoadedSegment, Fault> check_lldt(uint16_t selector, std::optional<uint64_t> low,
                                               std::optional<uint64_t> high, bool long_mode);

}  // namespace lamina::cpu::x86
