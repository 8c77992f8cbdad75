#pragma once
// The pure rules of virtual-8086 mode (Intel SDM Vol. 3A ch. 20; the INT n and IRET pseudo code
// of Vol. 2): which IOPL-sensitive instructions fault, the stack frame an interrupt or exception
// from virtual-8086 mode pushes for its 32-bit (or 16-bit) protected-mode handler, and the frame
// IRET pops to return to virtual-8086 mode. VME (CR4.VME, virtual interrupt flags, the
// interrupt redirection bitmap) is not modelled: Lamina does not advertise it.
//
// The core does the stack accesses and the segment loads. Thread-safety: stateless.

#include <array>
#include <cstdint>
#include <expected>
#include <span>

#include "cpu/x86/system/fault.h"

namespace lamina::cpu::x86 {

// CLI, STI, PUSHF, POPF, INT n and IRET raise #GP(0) in virtual-8086 mode unless IOPL = 3
// (SDM 20.2.7). INT3, INTO and INT1 are not IOPL-sensitive: they go to the IDT.
inline constexpr bool virtual_8086_sensitive_fault(bool virtual_8086, uint8_t iopl) {
  return virtual_8086 && iopl < 3;
}

// A segment register in virtual-8086 mode: base = selector * 16, a 64 KiB limit.
inline constexpr uint64_t virtual_8086_segment_base(uint16_t selector) {
  return uint64_t{selector} << 4;
}
inline constexpr uint32_t kVirtual8086SegmentLimit = 0xffff;

// What an interrupt or exception from virtual-8086 mode pushes on the ring-0 stack, first pushed
// first (SDM Figure 20-5): GS, FS, DS, ES, SS, ESP, EFLAGS, CS, EIP and the error code if any.
struct Virtual8086InterruptFrame {
  std::array<uint32_t, 10> values{};
  uint8_t count = 9;
};
// `segments` are ES, CS, SS, DS, FS, GS (the core's order).
Virtual8086InterruptFrame virtual_8086_interrupt_frame(const std::array<uint16_t, 6>& segments,
                                                       uint32_t esp, uint32_t eflags,
                                                       uint32_t eip, bool has_error_code,
                                                       uint32_t error_code);

// The nine dwords IRET pops from CPL 0 when the EFLAGS image has VM set (RETURN-TO-VIRTUAL-8086-
// MODE): EIP, CS, EFLAGS, ESP, SS, ES, DS, FS, GS; selectors are the low words.
struct Virtual8086Return {
  uint32_t eip = 0;
  uint32_t eflags = 0;
  uint32_t esp = 0;
  std::array<uint16_t, 6> segments{};  // ES, CS, SS, DS, FS, GS
};
// #GP(0) when the new EIP lies past the 64 KiB code segment.
std::expected<Virtual8086Return, Fault> decode_virtual_8086_return(
    std::span<const uint32_t, 9> popped);

}  // namespace lamina::cpu::x86
